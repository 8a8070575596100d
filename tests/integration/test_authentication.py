"""SigV4 authentication against a real server, signed by botocore's own signer.

Each attack is built from the same fixture as an honest request that succeeds beside it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from broker.clock import FixedClock
from tests.helpers import Broker, Creds, creds_of, presigned_url, signed_request, start_broker

WHO = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}


def send(req: tuple[str, str, dict[str, str], bytes]) -> httpx.Response:
    method, url, headers, body = req
    return httpx.request(method, url, headers=headers, content=body)


def code(resp: httpx.Response) -> str:
    found = re.search(r"<Code>(.*?)</Code>", resp.text)
    return found.group(1) if found else f"(no error: {resp.status_code})"


def message(resp: httpx.Response) -> str:
    found = re.search(r"<Message>(.*?)</Message>", resp.text, re.S)
    return found.group(1) if found else ""


def test_honest_request_is_answered(broker: Broker) -> None:
    resp = send(signed_request(broker.url, WHO, broker.root))
    assert resp.status_code == 200, resp.text
    assert f"<Arn>arn:aws:iam::{broker.account_id}:root</Arn>" in resp.text


def test_unsigned_request(broker: Broker) -> None:
    resp = httpx.post(broker.url + "/", data=WHO)
    assert (resp.status_code, code(resp)) == (403, "MissingAuthenticationToken")
    assert message(resp) == "Request is missing Authentication Token"


def test_tampered_body(broker: Broker) -> None:
    method, url, headers, body = signed_request(broker.url, WHO, broker.root)
    assert send((method, url, headers, body)).status_code == 200
    tampered = body.replace(b"GetCallerIdentity", b"GetSessionToken")
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    resp = send((method, url, headers, tampered))
    assert (resp.status_code, code(resp)) == (403, "SignatureDoesNotMatch")
    assert message(resp).startswith("The request signature we calculated does not match")


def test_added_query_parameter(broker: Broker) -> None:
    method, url, headers, body = signed_request(broker.url, WHO, broker.root)
    resp = send((method, url + "?DurationSeconds=900", headers, body))
    assert code(resp) == "SignatureDoesNotMatch"


def test_changed_host(broker: Broker) -> None:
    method, url, headers, body = signed_request(broker.url, WHO, broker.root)
    headers = {**headers, "Host": "evil.example"}
    assert code(send((method, url, headers, body))) == "SignatureDoesNotMatch"


def test_wrong_secret_and_unknown_key(broker: Broker) -> None:
    wrong = Creds(broker.root.access_key_id, "x" * 40)
    assert code(send(signed_request(broker.url, WHO, wrong))) == "SignatureDoesNotMatch"
    unknown = Creds("AKIA" + "A" * 16, broker.root.secret_access_key)
    resp = send(signed_request(broker.url, WHO, unknown))
    assert (resp.status_code, code(resp)) == (403, "InvalidClientTokenId")


def test_credential_scoped_to_another_service(broker: Broker) -> None:
    resp = send(signed_request(broker.url, WHO, broker.root, service="iam"))
    assert code(resp) == "SignatureDoesNotMatch"
    assert message(resp) == "Credential should be scoped to correct service: 'sts'. "
    iam = {"Action": "ListUsers", "Version": "2010-05-08"}
    assert send(signed_request(broker.url, iam, broker.root, service="iam")).status_code == 200


def test_clock_skew(broker: Broker) -> None:
    now = datetime.now(UTC)
    assert send(signed_request(broker.url, WHO, broker.root,
                               at=now - timedelta(minutes=4))).status_code == 200
    old = send(signed_request(broker.url, WHO, broker.root, at=now - timedelta(minutes=6)))
    assert (old.status_code, code(old)) == (403, "SignatureDoesNotMatch")
    assert message(old).startswith("Signature expired: ")
    assert message(old).endswith(" - 5 min.)")
    future = send(signed_request(broker.url, WHO, broker.root, at=now + timedelta(minutes=6)))
    assert message(future).startswith("Signature not yet current: ")


def test_malformed_authorization(broker: Broker) -> None:
    method, url, headers, body = signed_request(broker.url, WHO, broker.root)
    headers["Authorization"] = headers["Authorization"].split(", Signature=")[0]
    resp = send((method, url, headers, body))
    assert (resp.status_code, code(resp)) == (400, "IncompleteSignature")
    assert "Authorization header requires 'Signature' parameter." in message(resp)


def test_signed_get_with_query_parameters(broker: Broker) -> None:
    resp = send(signed_request(broker.url, WHO, broker.root, method="GET"))
    assert resp.status_code == 200, resp.text


def test_presigned_url(broker: Broker) -> None:
    url = presigned_url(broker.url, WHO, broker.root)
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    tampered = url.replace("GetCallerIdentity", "GetSessionToken")
    assert code(httpx.get(tampered)) == "SignatureDoesNotMatch"
    stale = presigned_url(broker.url, WHO, broker.root, expires=60,
                          at=datetime.now(UTC) - timedelta(minutes=2))
    resp = httpx.get(stale)
    assert (code(resp), message(resp)[:18]) == ("SignatureDoesNotMatch", "Signature expired:")
    long_lived = presigned_url(broker.url, WHO, broker.root, expires=3600,
                               at=datetime.now(UTC) - timedelta(minutes=30))
    assert httpx.get(long_lived).status_code == 200  # within its own X-Amz-Expires


def test_presigned_url_with_session_token(broker: Broker) -> None:
    session = creds_of(broker.client("sts").get_session_token())
    assert httpx.get(presigned_url(broker.url, WHO, session)).status_code == 200


# -- temporary credentials ----------------------------------------------------------------------


@pytest.fixture
def session(broker: Broker) -> Creds:
    return creds_of(broker.client("sts").get_federation_token(Name="fed-user"))


def test_session_control(broker: Broker, session: Creds) -> None:
    resp = send(signed_request(broker.url, WHO, session))
    assert resp.status_code == 200
    assert "federated-user/fed-user" in resp.text


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda t: t[:-8], id="truncated"),
    pytest.param(lambda t: t[:40] + ("B" if t[40] == "A" else "A") + t[41:], id="one-char"),
    pytest.param(lambda t: t + "AAAA", id="extended"),
    pytest.param(lambda t: "x", id="garbage"),
])
def test_tampered_token(broker: Broker, session: Creds, mutate: object) -> None:
    bad = Creds(session.access_key_id, session.secret_access_key,
                mutate(session.session_token))  # type: ignore[operator]
    resp = send(signed_request(broker.url, WHO, bad))
    assert (resp.status_code, code(resp)) == (403, "InvalidClientTokenId")


def test_swapped_token(broker: Broker, session: Creds) -> None:
    other = creds_of(broker.client("sts").get_federation_token(Name="other"))
    # The other session's token and secret, under this session's key id.
    swapped = Creds(session.access_key_id, other.secret_access_key, other.session_token)
    assert code(send(signed_request(broker.url, WHO, swapped))) == "InvalidClientTokenId"
    swapped = Creds(session.access_key_id, session.secret_access_key, other.session_token)
    assert code(send(signed_request(broker.url, WHO, swapped))) == "InvalidClientTokenId"


def test_temporary_key_without_token_and_long_term_key_with_one(broker: Broker,
                                                                 session: Creds) -> None:
    bare = Creds(session.access_key_id, session.secret_access_key)
    assert code(send(signed_request(broker.url, WHO, bare))) == "InvalidClientTokenId"
    mixed = Creds(broker.root.access_key_id, broker.root.secret_access_key,
                  session.session_token)
    assert code(send(signed_request(broker.url, WHO, mixed))) == "InvalidClientTokenId"


# -- a broker on a clock the test moves ---------------------------------------------------------


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Broker, FixedClock]]:
    clock = FixedClock(datetime.now(UTC))
    b = start_broker(tmp_path / "clocked", clock=clock)
    yield b, clock
    b.stop()


def test_expired_token(clocked: tuple[Broker, FixedClock]) -> None:
    broker, clock = clocked
    session = creds_of(broker.client("sts").get_session_token(DurationSeconds=900))
    assert send(signed_request(broker.url, WHO, session, at=clock.now())).status_code == 200
    clock.advance(899)
    assert send(signed_request(broker.url, WHO, session, at=clock.now())).status_code == 200
    clock.advance(1)
    resp = send(signed_request(broker.url, WHO, session, at=clock.now()))
    assert (resp.status_code, code(resp)) == (403, "ExpiredToken")
    assert message(resp) == "The security token included in the request is expired"
    # Long-term credentials signed at the same moment still work: only the session expired.
    assert send(signed_request(broker.url, WHO, broker.root, at=clock.now())).status_code == 200


def test_retired_key_tokens_stop_working(clocked: tuple[Broker, FixedClock]) -> None:
    broker, clock = clocked
    before = creds_of(broker.client("sts").get_session_token())
    runtime = broker.runtime
    old = runtime.keyring.sealing.id
    runtime.keyring.rotate(clock)
    runtime.keyring.save()
    after = creds_of(broker.client("sts").get_session_token())
    assert send(signed_request(broker.url, WHO, before, at=clock.now())).status_code == 200
    assert broker.server.call(runtime.iam.reseal_secrets()) >= 1
    runtime.keyring.retire(old, clock)
    runtime.keyring.save()
    resp = send(signed_request(broker.url, WHO, before, at=clock.now()))
    assert code(resp) == "InvalidClientTokenId"
    assert send(signed_request(broker.url, WHO, after, at=clock.now())).status_code == 200
    # The root key's secret was resealed with the new key, so it still authenticates.
    assert send(signed_request(broker.url, WHO, broker.root, at=clock.now())).status_code == 200


def test_a_key_deleted_under_load_stops_at_once(tmp_path: Path) -> None:
    """With a long cache (300 s), a key deleted while its holder keeps calling must stop at
    once in the process that deleted it: answers built during the delete are not kept."""
    import contextlib
    import json
    import threading

    import botocore.exceptions

    b = start_broker(tmp_path / "d", env={"BROKER_IAM_POLICY_CACHE_SECONDS": "300"})
    try:
        iam = b.client("iam")
        policy = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*"}]})

        def works(creds: Creds) -> bool:
            try:
                b.client("iam", creds).get_user()
            except botocore.exceptions.ClientError as exc:
                assert exc.response["Error"]["Code"] == "InvalidClientTokenId"
                return False
            return True

        for _ in range(6):
            name, creds = b.new_user()
            iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy)
            assert works(creds)  # the control
            stop = threading.Event()

            def hammer(creds: Creds = creds, stop: threading.Event = stop) -> None:
                client = b.client("iam", creds)
                while not stop.is_set():
                    with contextlib.suppress(botocore.exceptions.ClientError):
                        client.get_user()

            threads = [threading.Thread(target=hammer) for _ in range(6)]
            for thread in threads:
                thread.start()
            try:
                iam.delete_access_key(UserName=name, AccessKeyId=creds.access_key_id)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            assert not works(creds)
    finally:
        b.stop()
