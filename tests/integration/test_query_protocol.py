"""The Query protocol's own behaviour: dispatch, parameters, XML, errors."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode
from xml.etree import ElementTree

import httpx

from tests.helpers import Broker, signed_request

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


def call(broker: Broker, params: dict[str, str], service: str = "sts") -> httpx.Response:
    method, url, headers, body = signed_request(broker.url, params, broker.root, service=service)
    return httpx.request(method, url, headers=headers, content=body)


def parsed(resp: httpx.Response) -> ElementTree.Element:
    return ElementTree.fromstring(resp.content)


def error(resp: httpx.Response) -> tuple[int, str, str]:
    root = parsed(resp)
    ns = {"a": root.tag[1:].split("}")[0]}
    return (resp.status_code, root.findtext("a:Error/a:Code", namespaces=ns) or "",
            root.findtext("a:Error/a:Message", namespaces=ns) or "")


def test_result_document_shape(broker: Broker) -> None:
    resp = call(broker, {"Action": "GetCallerIdentity", "Version": "2011-06-15"})
    root = parsed(resp)
    assert root.tag == f"{{{STS_NS}}}GetCallerIdentityResponse"
    request_id = root.findtext(f"{{{STS_NS}}}ResponseMetadata/{{{STS_NS}}}RequestId")
    assert request_id and resp.headers["x-amzn-RequestId"] == request_id
    assert resp.headers["content-type"].startswith("text/xml")
    result = root.find(f"{{{STS_NS}}}GetCallerIdentityResult")
    assert result is not None
    assert [c.tag.split("}")[1] for c in result] == ["UserId", "Account", "Arn"]


def test_iam_uses_its_own_namespace(broker: Broker) -> None:
    resp = call(broker, {"Action": "ListUsers", "Version": "2010-05-08"}, "iam")
    assert parsed(resp).tag == f"{{{IAM_NS}}}ListUsersResponse"
    resp = call(broker, {"Action": "GetUser", "Version": "2010-05-08", "UserName": "nobody"},
                "iam")
    assert parsed(resp).tag == f"{{{IAM_NS}}}ErrorResponse"
    assert error(resp)[:2] == (404, "NoSuchEntity")


def test_error_document_shape(broker: Broker) -> None:
    resp = call(broker, {"Action": "Nope", "Version": "2011-06-15"})
    root = parsed(resp)
    assert root.tag == f"{{{STS_NS}}}ErrorResponse"
    assert root.findtext(f"{{{STS_NS}}}Error/{{{STS_NS}}}Type") == "Sender"
    assert root.findtext(f"{{{STS_NS}}}RequestId") == resp.headers["x-amzn-RequestId"]
    assert error(resp) == (400, "InvalidAction",
                           "Could not find operation Nope for version 2011-06-15")


def test_unknown_version_and_missing_action(broker: Broker) -> None:
    resp = call(broker, {"Action": "GetCallerIdentity", "Version": "2099-01-01"})
    assert error(resp)[:2] == (400, "InvalidAction")
    resp = call(broker, {"Version": "2011-06-15"})
    assert error(resp) == (400, "MissingParameter",
                           "The request must contain the parameter Action")


def test_version_may_be_left_out(broker: Broker) -> None:
    assert call(broker, {"Action": "GetCallerIdentity"}).status_code == 200
    assert call(broker, {"Action": "ListUsers"}, "iam").status_code == 200


def test_repeated_parameter_is_refused(broker: Broker) -> None:
    method, url, headers, body = signed_request(
        broker.url, {"Action": "GetCallerIdentity", "Version": "2011-06-15"}, broker.root)
    resp = httpx.request(method, url + "?Version=2011-06-15", headers=headers, content=body)
    assert error(resp)[:2] == (404, "MalformedQueryString")


def test_body_that_is_not_utf8(broker: Broker) -> None:
    resp = httpx.post(broker.url + "/", content=b"Action=%FF%FE",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert error(resp)[:2] == (404, "MalformedQueryString")


def test_oversized_body(broker: Broker) -> None:
    big = urlencode({"Action": "GetCallerIdentity", "Pad": "x" * 2_000_000})
    resp = httpx.post(broker.url + "/", content=big,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert error(resp)[:2] == (413, "RequestEntityTooLarge")


def test_echoed_input_is_escaped(broker: Broker) -> None:
    resp = call(broker, {"Action": "<x>&\x01", "Version": "2011-06-15"})
    status, code, message = error(resp)
    assert (status, code) == (400, "InvalidAction")
    assert message == "Could not find operation <x>&\ufffd for version 2011-06-15"


def test_health_endpoints(broker: Broker) -> None:
    assert httpx.get(broker.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(broker.url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


def test_no_server_banner_and_no_stack_traces(broker: Broker) -> None:
    resp = httpx.post(broker.url + "/", content=b"\xff" * 100)
    assert resp.status_code < 500
    assert "Traceback" not in resp.text
    assert "server" not in {k.lower() for k in resp.headers} or "uvicorn" not in \
        resp.headers.get("server", "")


def test_audit_log_has_no_secrets(broker: Broker) -> None:
    result = broker.client("sts").get_session_token()
    secret = result["Credentials"]["SecretAccessKey"]
    token = result["Credentials"]["SessionToken"]
    key = broker.client("iam").create_access_key()["AccessKey"]
    httpx.post(broker.url + "/", data={"Action": "GetCallerIdentity"},
               headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAZZZZZZZZZZZZZZZZ/"
                        "20260101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, "
                        "Signature=" + "0" * 64, "X-Amz-Date": "20260101T000000Z"})
    # A malformed header (no SignedHeaders) is echoed in the error: never its signature.
    httpx.post(broker.url + "/", data={"Action": "GetCallerIdentity"},
               headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAYYYYYYYYYYYYYYYY/"
                        "20260101/us-east-1/sts/aws4_request, Signature=" + "f" * 64,
                        "X-Amz-Date": "20260101T000000Z"})
    log = (broker.settings.data_dir / "audit.log").read_text()
    events = [json.loads(line) for line in log.splitlines()]
    issued = [e for e in events if "errorCode" not in e]
    assert any(e["eventName"] == "GetSessionToken" and
               e["responseElements"]["credentials"]["accessKeyId"] ==
               result["Credentials"]["AccessKeyId"] for e in issued)
    assert any(e["eventName"] == "CreateAccessKey" and
               e.get("responseElements", {}).get("accessKey", {}).get("accessKeyId") ==
               key["AccessKeyId"] for e in issued)
    # A refused signature: a caller the broker did not identify, under the action it asked.
    refused = [e for e in events if "errorCode" in e and e["userIdentity"]["type"] == "Unknown"]
    assert any(e["userIdentity"].get("accessKeyId") == "AKIAZZZZZZZZZZZZZZZZ" and
               e["errorCode"] == "SignatureDoesNotMatch" and
               e["eventName"] == "GetCallerIdentity" for e in refused)
    cli = [e for e in events if e.get("userAgent") == "broker init"]
    assert [e["additionalEventData"]["IssuedAccessKeyId"] for e in cli] == [
        broker.root.access_key_id]
    for e in events:
        assert {"eventTime", "eventName", "requestID"} <= set(e)
        assert "sourceIPAddress" in e or e in cli  # only the command line has no address
    assert any(e["errorCode"] == "IncompleteSignature" and "Signature=(redacted)" in
               e["errorMessage"] for e in refused)
    for needle in (secret, token, key["SecretAccessKey"], broker.root.secret_access_key, "0" * 64,
                   "f" * 64):
        assert needle not in log
    assert not re.search(r"[A-Za-z0-9+/]{40}", log)


def test_bytes_that_are_not_utf8_in_the_request_line(broker: Broker) -> None:
    import socket

    for target in (b"/?Action=%FF", b"/?Action=\xff\xfe", b"/\xff?Action=GetCallerIdentity"):
        with socket.create_connection(("127.0.0.1", broker.server.port)) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer
