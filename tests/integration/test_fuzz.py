"""Bad input gets an AWS-style 4xx, never a 500: hypothesis drives the Query parser, the shape
parser and the SigV4 header parser with arbitrary input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.aws import shapes, sigv4
from broker.aws.errors import AwsError, ValidationError
from broker.aws.http import HttpRequest
from broker.aws.query import Operation
from broker.runtime import Runtime, initialize, open_runtime
from broker.settings import load
from tests.helpers import Creds, signed_request

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class InProcess:
    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop, root: Creds) -> None:
        self.runtime, self.loop, self.root = runtime, loop, root

    def handle(self, req: HttpRequest) -> tuple[int, bytes]:
        answer = self.loop.run_until_complete(
            self.runtime.protocol.handle(req, source_ip="127.0.0.1"))
        return answer.status, answer.body


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    data = tmp_path_factory.mktemp("fuzz")
    env = {"BROKER_SERVER_DATA_DIR": str(data), "BROKER_AUDIT_SINK": "file",
           "BROKER_AUDIT_PATH": str(Path(data) / "audit.log")}
    s = load(None, environ=env)
    loop = asyncio.new_event_loop()
    _, key = loop.run_until_complete(initialize(s))
    runtime = loop.run_until_complete(open_runtime(s))
    yield InProcess(runtime, loop, Creds(key.key.access_key_id, key.secret_access_key))
    loop.run_until_complete(runtime.close())
    loop.close()


def assert_aws_answer(status: int, body: bytes) -> None:
    assert status < 500, body
    root = ElementTree.fromstring(body)  # always well-formed XML
    if status >= 400:
        assert root.tag.endswith("}ErrorResponse")
        assert root.find("{*}Error/{*}Code") is not None


text = st.text(st.characters(codec="utf-8"), max_size=200)
values = st.one_of(
    text,
    st.integers(min_value=1, max_value=2000).map(lambda n: "[" * n + "]" * n),  # deep JSON
    st.integers(min_value=1, max_value=2000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(["9" * 50, "-0", "1e3", "\u0661\u0662", "AA==", "true", "Active"]),
    # JSON (a policy, a JWKS, a Session) whose strings hold lone surrogates and NUL: json.dumps
    # writes them as \u escapes, which json.loads would decode to text UTF-8 cannot carry.
    st.builds(lambda action, resource: json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action,
                                                "Resource": resource}]}),
        st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
        st.text(st.characters(codec=None, exclude_categories=()), max_size=8)),
    st.builds(lambda key, value: json.dumps({key: value}),
              st.text(st.characters(min_codepoint=0, max_codepoint=0xDFFF), max_size=4),
              st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4)),
)
raw_query = st.lists(st.sampled_from(
    [*"aAX-_.~%&=+/;:, 0129fF\u00e9\u2603",
     # escapes of bytes that are not UTF-8: a lone surrogate, an overlong "/", 0xFF, a cut
     "%ED%A0%80", "%C0%AF", "%FF", "%E2%98", "%00"]), max_size=100).map("".join)
actions = st.sampled_from(["GetCallerIdentity", "GetSessionToken", "GetFederationToken",
                           "CreateUser", "ListUsers", "UpdateAccessKey", "Nope", ""])


@FUZZ
@given(query=raw_query, body=st.binary(max_size=300), content_type=st.sampled_from(
    ["application/x-www-form-urlencoded", "text/plain", "", "application/json"]),
    method=st.sampled_from(["GET", "POST"]))
def test_arbitrary_requests(broker: InProcess, query: str, body: bytes, content_type: str,
                            method: str) -> None:
    req = HttpRequest(method, "/", query, [("Host", "b"), ("Content-Type", content_type)], body)
    assert_aws_answer(*broker.handle(req))


credential = st.one_of(
    text,
    st.builds(lambda k, d, r, s, t: f"{k}/{d}/{r}/{s}/{t}",
              st.sampled_from(["AKIAAAAAAAAAAAAAAAAA", "ASIAAAAAAAAAAAAAAAAA", "", "x" * 300]),
              st.sampled_from(["20260101", "", "2026"]), st.sampled_from(["us-east-1", "", "!"]),
              st.sampled_from(["sts", "iam", ""]), st.sampled_from(["aws4_request", ""])),
)
authorization = st.one_of(
    text,
    st.builds(lambda alg, c, h, s, sep: f"{alg} Credential={c}{sep}SignedHeaders={h}{sep}"
              f"Signature={s}",
              st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", "", "AWS"]), credential,
              st.sampled_from(["host;x-amz-date", "host", "", ";;", "x-amz-date;host", "HOST"]),
              st.text(alphabet="0123456789abcdef", max_size=70), st.sampled_from([", ", ",", " "])),
)


http_dates = st.one_of(
    text,
    st.sampled_from(["Fri, 31 Dec 9999 23:59:59 -0100", "Mon, 01 Jan 0001 00:00:00 +0100",
                     "Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 99 Foo 2026 99:99:99 GMT"]),
)


@FUZZ
@given(auth=authorization, amz_date=st.one_of(st.none(), text,
       st.sampled_from(["20260101T000000Z", "99999999T999999Z"])),
       date=st.one_of(st.none(), http_dates),
       token=st.one_of(st.none(), text), action=actions)
def test_arbitrary_authorization_headers(broker: InProcess, auth: str, amz_date: str | None,
                                         date: str | None, token: str | None,
                                         action: str) -> None:
    headers = [("Host", "b"), ("Authorization", auth),
               ("Content-Type", "application/x-www-form-urlencoded")]
    if amz_date is not None:
        headers.append(("X-Amz-Date", amz_date))
    if date is not None:
        headers.append(("Date", date))
    if token is not None:
        headers.append(("X-Amz-Security-Token", token))
    body = urlencode({"Action": action}).encode()
    assert_aws_answer(*broker.handle(HttpRequest("POST", "/", "", headers, body)))


@FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                     "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
                     "Action"]),
    st.one_of(text, credential, st.sampled_from(["AWS4-HMAC-SHA256", "-1", "604801", "host"]))))
def test_arbitrary_presigned_queries(broker: InProcess, params: dict[str, str]) -> None:
    req = HttpRequest("GET", "/", urlencode(params), [("Host", "b")], b"")
    assert_aws_answer(*broker.handle(req))


@FUZZ
@given(auth=authorization, amz_date=st.one_of(st.none(), text), date=st.one_of(st.none(),
       http_dates), signs_date=st.booleans())
def test_sigv4_header_parser_only_raises_aws_errors(auth: str, amz_date: str | None,
                                                    date: str | None, signs_date: bool) -> None:
    if signs_date:
        auth = auth.replace("SignedHeaders=host", "SignedHeaders=date;host")
    headers = [("Host", "b"), ("Authorization", auth)]
    if amz_date is not None:
        headers.append(("X-Amz-Date", amz_date))
    if date is not None:
        headers.append(("Date", date))
    req = HttpRequest("POST", "/", "", headers, b"")
    try:
        claim = sigv4.parse_claim(req, [])
    except AwsError as exc:
        assert exc.status == 400
        return
    assert claim.signed_headers


INDEXES = ("1", "2", "0", "x", "01", "\u00b2", "\u0661", "9" * 40, "-1", "")


def member_keys(shape: shapes.Structure, prefix: str = "") -> list[str]:
    keys = []
    for m in shape.members:
        keys.append(prefix + m.name)
        if isinstance(m.shape, shapes.ListOf):
            for i in INDEXES:
                base = f"{prefix}{m.name}.member.{i}"
                if isinstance(m.shape.member, shapes.Structure):
                    keys += member_keys(m.shape.member, base + ".")
                else:
                    keys.append(base)
    return keys


def _ops() -> list[Operation]:
    from broker.iam import api as iam_api
    from broker.sts import api as sts_api

    return [*sts_api.operations(None, None, None, None),  # type: ignore[arg-type]
            *iam_api.operations(None, None, None)]  # type: ignore[arg-type]


@FUZZ
@given(data=st.data(), op=st.sampled_from(_ops()))
def test_shape_parser_only_raises_validation_errors(data: st.DataObject, op: Operation) -> None:
    keys = member_keys(op.input)
    if not keys:
        assert shapes.parse(op.input, {}) == {}
        return
    params = data.draw(st.dictionaries(st.sampled_from(keys), text, max_size=8))
    try:
        shapes.parse(op.input, params)
    except ValidationError as exc:
        assert exc.message.split(" ", 1)[0].isdigit()


@FUZZ
@given(data=st.data(), op=st.sampled_from(_ops()))
def test_signed_requests_with_arbitrary_parameters(broker: InProcess, data: st.DataObject,
                                                   op: Operation) -> None:
    keys = member_keys(op.input)
    params = data.draw(st.dictionaries(st.sampled_from(keys), values, max_size=6)) if keys \
        else {}
    status, answer = signed_call(broker, op, params)
    assert_aws_answer(status, answer)


def test_signed_calls_reach_the_handlers(broker: InProcess) -> None:
    """The control of the test above: its signed requests authenticate, so what it fuzzes is
    validation and the handlers, not the signature check."""
    ops = {op.name: op for op in _ops()}
    status, answer = signed_call(broker, ops["GetCallerIdentity"], {})
    assert status == 200, answer
    status, answer = signed_call(broker, ops["CreateUser"], {"UserName": "bad name!"})
    assert status == 400 and b"ValidationError" in answer


def signed_call(broker: InProcess, op: Operation, params: dict[str, str]) -> tuple[int, bytes]:
    params = {**params, "Action": op.name, "Version": op.service.version}
    method, url, headers, body = signed_request("http://b", params, broker.root,
                                                service=op.service.name)
    query = url.split("//", 1)[1].partition("/")[2].partition("?")[2]
    return broker.handle(HttpRequest(method, "/", query, [("Host", "b"), *headers.items()], body))


# -- the JSON 1.1 protocol ---------------------------------------------------------------------


def _json_ops() -> list[Any]:
    from broker.organizations import api as org_api

    return org_api.operations(None, None)  # type: ignore[arg-type]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(st.characters(codec=None, exclude_categories=()), max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _member_names(shape: shapes.Shape) -> list[str]:
    names: list[str] = []
    inner = shape.member if isinstance(shape, shapes.ListOf) else shape
    if isinstance(inner, shapes.Structure):
        for m in inner.members:
            names.append(m.name)
            names += _member_names(m.shape)
    return names


@FUZZ
@given(data=st.data(), op=st.sampled_from(_json_ops()))
def test_document_parser_only_raises_its_faults(data: st.DataObject, op: Any) -> None:
    """Any JSON value for any member: parse_document answers, or raises SerializationFault or
    ShapeFaults (which the protocol turns into SerializationException and the service's
    InvalidInputException) — never anything else."""
    names = _member_names(op.input) or ["x"]
    document = data.draw(st.one_of(
        json_values, st.dictionaries(st.sampled_from(names), json_values, max_size=6)))
    try:
        shapes.parse_document(op.input, document)
    except shapes.SerializationFault:
        pass
    except shapes.ShapeFaults as exc:
        assert exc.faults and exc.message().split(" ", 1)[0].isdigit()


@FUZZ
@given(data=st.data(), op=st.sampled_from(_json_ops()))
def test_signed_json_requests_with_arbitrary_bodies(broker: InProcess, data: st.DataObject,
                                                    op: Any) -> None:
    names = _member_names(op.input) or ["x"]
    document = data.draw(st.dictionaries(st.sampled_from(names), json_values, max_size=6))
    body = json.dumps(document).encode()
    status, answer = signed_json_call(broker, op, body)
    assert status < 500, answer
    if status >= 400:
        assert json.loads(answer)["__type"]


def test_signed_json_calls_reach_the_handlers(broker: InProcess) -> None:
    """The control: the JSON requests above authenticate and reach the handlers."""
    ops = {op.name: op for op in _json_ops()}
    status, answer = signed_json_call(broker, ops["DescribeOrganization"], b"{}")
    # The handler answered: with the organization, or — before the fuzzing above happened to
    # create one (an empty CreateOrganization is honest) — that there is none.
    assert (status == 200 and "Organization" in json.loads(answer)) or (
        status == 400 and json.loads(answer)["__type"] == "AWSOrganizationsNotInUseException")
    status, answer = signed_json_call(broker, ops["ListRoots"], b'{"MaxResults": 0}')
    assert status == 400 and json.loads(answer)["__type"] == "InvalidInputException"


def signed_json_call(broker: InProcess, op: Any, body: bytes) -> tuple[int, bytes]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="http://b/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"{op.service.target}.{op.name}"})
    SigV4Auth(Credentials(broker.root.access_key_id, broker.root.secret_access_key),
              op.service.name, "us-east-1").add_auth(request)
    headers = [("Host", "b"), *request.headers.items()]
    answer = broker.loop.run_until_complete(broker.runtime.json_protocol.handle(
        HttpRequest("POST", "/", "", headers, body), source_ip="127.0.0.1"))
    return answer.status, answer.body
