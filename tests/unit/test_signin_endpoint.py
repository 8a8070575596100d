"""botocore's endpoint rules for AWS Sign-In, and examples/signin_endpoint's handler: without
it the session operations go to AWS's regional host whatever ``endpoint_url`` says (so the
documentation's warning stays true); with it every operation goes to the configured endpoint,
signed for the client's region. Requests are caught before they are sent: no network."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import boto3
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "signin_endpoint" / \
    "keep_endpoint.py"
BROKER = "http://127.0.0.1:9"


class Caught(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__(request.url)
        self.request = request


def _catch(request: Any, **kwargs: Any) -> None:
    raise Caught(request)


def _client(*, handler: bool) -> Any:
    session = boto3.Session(aws_access_key_id="AKIAEXAMPLEEXAMPLE00",
                            aws_secret_access_key="x" * 40, region_name="eu-west-1")
    if handler:
        spec = importlib.util.spec_from_file_location("keep_endpoint", EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        session.events.register("before-endpoint-resolution.signin",
                                module.keep_broker_endpoint)
    client = session.client("signin", endpoint_url=BROKER)
    client.meta.events.register("before-send.signin", _catch)
    return client


CALLS = [("list_sessions", {}, "/list-sessions"),
         ("get_session", {"sessionArn": "arn:aws:signin:eu-west-1:111122223333:session/s"},
          "/get-session"),
         ("batch_revoke_sessions",
          {"sessionArns": ["arn:aws:signin:eu-west-1:111122223333:session/s"]},
          "/batch-revoke-sessions")]


def _sent(client: Any, operation: str, params: dict[str, Any]) -> Any:
    with pytest.raises(Caught) as caught:
        getattr(client, operation)(**params)
    return caught.value.request


@pytest.mark.parametrize(("operation", "params", "path"), CALLS)
def test_without_the_handler_the_session_operations_leave_the_endpoint(
        operation: str, params: dict[str, Any], path: str) -> None:
    request = _sent(_client(handler=False), operation, params)
    assert request.url == f"https://signin.eu-west-1.api.aws{path}"


@pytest.mark.parametrize(("operation", "params", "path"), CALLS)
def test_with_the_handler_they_reach_the_broker_signed_for_the_region(
        operation: str, params: dict[str, Any], path: str) -> None:
    request = _sent(_client(handler=True), operation, params)
    assert request.url == BROKER + path
    assert "/eu-west-1/signin/aws4_request" in request.headers["Authorization"].decode()


def test_the_oauth_call_follows_the_endpoint_either_way() -> None:
    """The control: CreateOAuth2Token is no control-plane call (and is sent unsigned)."""
    params = {"tokenInput": {"clientId": "c", "grantType": "refresh_token",
                             "refreshToken": "r"}}
    for handler in (False, True):
        request = _sent(_client(handler=handler), "create_o_auth2_token", params)
        assert request.url == BROKER + "/v1/token"
        assert "Authorization" not in request.headers
