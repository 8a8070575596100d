"""The audit line: a CloudTrail record and nothing else, one line of ASCII JSON whatever the
values hold — quotes, backslashes, control characters, line separators, characters beyond
the BMP —, which a reader parses back to the same values; secrets are hidden by the rendering
itself (sensitive shapes, secret-bearing names, an allow-list of the answer's members); what
CloudTrail's members have no room for in additionalEventData; and the sinks: the file
(appended by many threads, opened again when rotated or on SIGHUP) and syslog (a real UDP
receiver)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import HIDDEN, AuditEvent, identity_of_federation
from broker.audit_sinks import FileSink, SyslogSink, request_reopen
from broker.clock import iso8601
from broker.iam import model as iam_model
from broker.principal import Principal, PrincipalType
from broker.sts import model as sts_model
from broker.sts.tokens import Session, SessionKind

AT = datetime(2026, 11, 29, 4, 5, 6, 789, tzinfo=UTC)
TEXT_FIELDS = ("source_ip", "user_agent", "principal", "account", "caller_access_key_id",
               "access_key_id", "subject", "error_code", "error_message", "mfa_used")
VALUE = st.none() | st.text(max_size=40)
CLOUDTRAIL = {"eventVersion", "userIdentity", "eventTime", "eventSource", "eventName",
              "awsRegion", "requestParameters", "requestID", "eventID", "readOnly",
              "eventType", "managementEvent", "eventCategory"}
OPTIONAL = {"sourceIPAddress", "userAgent", "errorCode", "errorMessage", "responseElements",
            "additionalEventData", "recipientAccountId"}


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=30).filter(lambda name: name != "ConsoleLogin"),
       st.text(min_size=1, max_size=30),
       st.fixed_dictionaries(dict.fromkeys(TEXT_FIELDS, VALUE)),
       st.dictionaries(st.from_regex(r"[A-Z][a-zA-Z]{0,8}", fullmatch=True),
                       st.text(max_size=20) | st.integers(), max_size=4))
def test_any_values_make_one_line_that_reads_back(event: str, request_id: str,
                                                  optional: dict[str, str | None],
                                                  params: dict[str, Any]) -> None:
    e = AuditEvent(time=AT, event=event, outcome="issued", request_id=request_id,
                   parameters=params, **optional)
    line = e.line()
    assert "\n" not in line and line.isascii()
    doc = json.loads(line)
    assert set(doc) >= CLOUDTRAIL
    assert (doc["eventName"], doc["requestID"], doc["eventTime"]) == (event, request_id,
                                                                     iso8601(AT))
    # Every value given, under CloudTrail's name for it, and no member of the earlier line.
    assert set(doc) <= CLOUDTRAIL | OPTIONAL
    assert doc.get("sourceIPAddress") == optional["source_ip"]
    assert doc.get("userAgent") == optional["user_agent"]
    assert doc.get("errorCode") == optional["error_code"]
    assert doc.get("errorMessage") == optional["error_message"]
    who = doc["userIdentity"]
    assert who.get("arn") == optional["principal"]
    assert who.get("accessKeyId") == optional["caller_access_key_id"]
    extra = doc.get("additionalEventData", {})
    assert extra.get("MFAUsed") == optional["mfa_used"]
    assert extra.get("IssuedAccessKeyId") == optional["access_key_id"]
    subject = optional["subject"]
    assert extra.get("IssuedTo") == (None if subject == optional["principal"] else subject)
    if optional["account"] is not None:
        assert doc["recipientAccountId"] == optional["account"]
    # Each parameter under CloudTrail's name, its value kept unless its name says secret.
    shown = doc["requestParameters"]
    assert len(shown) == len({k[:1].lower() + k[1:] for k in params})
    for name, value in params.items():
        kept = shown[name[:1].lower() + name[1:]]
        assert kept in (value, HIDDEN)


def test_an_iam_change_is_cloudtrail_s_members_alone() -> None:
    e = AuditEvent(time=AT, event="CreateUser", outcome="succeeded", request_id="r",
                   source_ip="10.0.0.1", user_agent="aws-cli/2", service="iam",
                   principal="arn:aws:iam::123456789012:root", account="123456789012",
                   caller_access_key_id="AKIAEXAMPLE", parameters={"UserName": "jo"},
                   shape=iam_model.CreateUserRequest)
    doc = json.loads(e.line())
    assert set(doc) == CLOUDTRAIL | {"sourceIPAddress", "userAgent", "recipientAccountId"}
    assert doc["userIdentity"] == {"type": "Root", "arn": "arn:aws:iam::123456789012:root",
                                   "accountId": "123456789012", "accessKeyId": "AKIAEXAMPLE"}
    assert (doc["eventSource"], doc["readOnly"], doc["eventType"]) == (
        "iam.amazonaws.com", False, "AwsApiCall")
    assert doc["requestParameters"] == {"userName": "jo"}
    assert len(doc["eventID"]) == 36 and doc["eventID"] != json.loads(e.line())["eventID"]


def test_sensitive_members_and_secret_names_are_hidden_and_the_rest_kept() -> None:
    """botocore marks SAMLAssertion, WebIdentityToken and passwords sensitive; TokenCode and
    AuthenticationCode1 are unmarked and hidden by name. The control: every other member of
    the same requests, nested tags included, is written as given."""
    cases: list[tuple[Any, dict[str, Any], set[str]]] = [
        (sts_model.AssumeRoleWithSAMLRequest,
         {"RoleArn": "arn:aws:iam::1:role/r", "PrincipalArn": "arn:aws:iam::1:saml-provider/p",
          "SAMLAssertion": "PHNhbWw+c2VjcmV0", "DurationSeconds": 900}, {"SAMLAssertion"}),
        (sts_model.AssumeRoleWithWebIdentityRequest,
         {"RoleArn": "arn:aws:iam::1:role/r", "RoleSessionName": "s",
          "WebIdentityToken": "eyJhbGciOi.secret.sig"}, {"WebIdentityToken"}),
        (sts_model.AssumeRoleRequest,
         {"RoleArn": "arn:aws:iam::1:role/r", "RoleSessionName": "s",
          "SerialNumber": "arn:aws:iam::1:mfa/jo", "TokenCode": "123456",
          "Tags": [{"Key": "project", "Value": "apollo"}]}, {"TokenCode"}),
        (iam_model.CreateLoginProfileRequest,
         {"UserName": "jo", "Password": "correct horse battery"}, {"Password"}),
        (iam_model.ChangePasswordRequest,
         {"OldPassword": "old one!", "NewPassword": "new one!"}, {"OldPassword", "NewPassword"}),
        (iam_model.EnableMFADeviceRequest,
         {"UserName": "jo", "SerialNumber": "arn:aws:iam::1:mfa/jo",
          "AuthenticationCode1": "111111", "AuthenticationCode2": "222222"},
         {"AuthenticationCode1", "AuthenticationCode2"}),
    ]
    for shape, params, secret in cases:
        line = AuditEvent(time=AT, event="X", outcome="issued", request_id="r",
                          source_ip=None, user_agent=None, parameters=params,
                          shape=shape).line()
        shown = json.loads(line)["requestParameters"]
        for name, value in params.items():
            key = name[:1].lower() + name[1:]
            if name in secret:
                assert shown[key] == HIDDEN and str(value) not in line
            elif name == "Tags":
                assert shown[key] == [{"key": "project", "value": "apollo"}]
            else:
                assert shown[key] == value


def test_the_answer_keeps_the_public_parts_of_credentials_only() -> None:
    expires = datetime(2026, 11, 29, 5, 5, 6, tzinfo=UTC)
    result = {"Credentials": {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "wJalrSECRET",
                              "SessionToken": "FQoGZXIvYXdzTOKEN", "Expiration": expires},
              "AssumedRoleUser": {"Arn": "arn:aws:sts::1:assumed-role/r/s",
                                  "AssumedRoleId": "AROAEXAMPLE:s"},
              "PackedPolicySize": 6, "Subject": "jo", "Issuer": "https://idp.example/"}
    line = AuditEvent(time=AT, event="AssumeRoleWithSAML", outcome="issued", request_id="r",
                      source_ip=None, user_agent=None, response=result).line()
    assert "wJalrSECRET" not in line and "FQoGZXIvYXdzTOKEN" not in line
    assert json.loads(line)["responseElements"] == {
        "credentials": {"accessKeyId": "ASIAEXAMPLE", "expiration": iso8601(expires)},
        "assumedRoleUser": {"assumedRoleId": "AROAEXAMPLE:s",
                            "arn": "arn:aws:sts::1:assumed-role/r/s"},
        "packedPolicySize": 6, "subject": "jo", "issuer": "https://idp.example/"}
    key = {"AccessKey": {"AccessKeyId": "AKIAEXAMPLE", "SecretAccessKey": "wJalrSECRET",
                         "UserName": "jo", "Status": "Active", "CreateDate": expires}}
    line = AuditEvent(time=AT, event="CreateAccessKey", outcome="issued", request_id="r",
                      source_ip=None, user_agent=None, response=key).line()
    assert "wJalrSECRET" not in line
    assert json.loads(line)["responseElements"]["accessKey"]["accessKeyId"] == "AKIAEXAMPLE"


def test_an_assumed_role_caller_has_cloudtrail_s_session_context() -> None:
    session = Session(
        access_key_id="ASIAEXAMPLE", secret_access_key="wJalrSECRET",
        kind=SessionKind.ASSUMED_ROLE, account_id="123456789012",
        arn="arn:aws:sts::123456789012:assumed-role/deploy/ci", user_id="AROAEXAMPLE:ci",
        name="ci", source_arn="arn:aws:iam::123456789012:role/deploy",
        source_id="AROAEXAMPLE", issued_at=1_764_388_800, expires_at=1_764_392_400, mfa=True,
        source_identity="jo")
    caller = Principal.of_session(session)
    assert caller.type is PrincipalType.ASSUMED_ROLE
    line = AuditEvent(time=AT, event="AssumeRole", outcome="issued", request_id="r",
                      source_ip=None, user_agent=None, caller=caller, service="sts").line()
    assert "wJalrSECRET" not in line
    doc = json.loads(line)
    assert doc["userIdentity"] == {
        "type": "AssumedRole", "principalId": "AROAEXAMPLE:ci", "arn": session.arn,
        "accountId": "123456789012", "accessKeyId": "ASIAEXAMPLE",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE",
                              "arn": session.source_arn, "accountId": "123456789012",
                              "userName": "deploy"},
            "attributes": {"creationDate": "2025-11-29T04:00:00Z", "mfaAuthenticated": "true"},
            "sourceIdentity": "jo"}}
    assert (doc["readOnly"], doc["recipientAccountId"]) == (True, "123456789012")


def test_identity_provider_callers_are_saml_and_web_identity_users() -> None:
    saml = identity_of_federation("AssumeRoleWithSAML",
                                  {"Subject": "jo", "Issuer": "https://idp.example/"})
    assert saml == {"type": "SAMLUser", "principalId": "https://idp.example/:jo",
                    "userName": "jo", "identityProvider": "https://idp.example/"}
    web = identity_of_federation("AssumeRoleWithWebIdentity", {
        "SubjectFromWebIdentityToken": "u-1", "Provider": "idp.example", "Audience": "app"})
    assert web["type"] == "WebIdentityUser" and web["principalId"] == "idp.example:app:u-1"
    # Refused: nothing the token or assertion claimed is believed, so nothing is written.
    assert identity_of_federation("AssumeRoleWithSAML", None) == {"type": "SAMLUser"}


def test_a_console_login_is_a_console_sign_in_event() -> None:
    e = AuditEvent(time=AT, event="ConsoleLogin", outcome="issued", request_id="r",
                   source_ip="10.0.0.1", user_agent="Mozilla", mfa_used="Yes",
                   subject="arn:aws:iam::123456789012:user/jo")
    doc = json.loads(e.line())
    assert (doc["eventType"], doc["eventSource"], doc["readOnly"]) == (
        "AwsConsoleSignIn", "signin.amazonaws.com", False)
    assert doc["responseElements"] == {"ConsoleLogin": "Success"}
    assert doc["additionalEventData"] == {"MFAUsed": "Yes"}
    assert doc["userIdentity"] == {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/jo",
                                   "accountId": "123456789012"}


def test_what_no_answer_shows_is_kept_in_additional_event_data() -> None:
    """A browser's role switch issues a key and a session no answer shows: both are kept in
    additionalEventData. The controls, built alike: the same event whose subject is its caller
    does not name it twice; STS's answer carries both, so its line has no
    additionalEventData; an IAM change issues nothing and has none either."""
    switcher = "arn:aws:sts::123456789012:assumed-role/admin/jo"
    switched = "arn:aws:sts::123456789012:assumed-role/deploy/jo"

    def switch(subject: str, **more: Any) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(AuditEvent(
            time=AT, event="SwitchRole", outcome="issued", request_id="r", source_ip=None,
            user_agent=None, principal=switcher, caller_access_key_id="ASIACALLER",
            access_key_id="ASIAISSUED", subject=subject, **more).line())
        return doc

    doc = switch(switched)
    assert doc["additionalEventData"] == {"IssuedAccessKeyId": "ASIAISSUED",
                                          "IssuedTo": switched}
    assert doc["userIdentity"]["arn"] == switcher and "errorCode" not in doc
    assert switch(switcher)["additionalEventData"] == {"IssuedAccessKeyId": "ASIAISSUED"}
    answered = switch(switched, response={
        "Credentials": {"AccessKeyId": "ASIAISSUED", "SecretAccessKey": "wJalrSECRET"},
        "AssumedRoleUser": {"Arn": switched, "AssumedRoleId": "AROAEXAMPLE:jo"}})
    assert "additionalEventData" not in answered
    assert answered["responseElements"]["credentials"] == {"accessKeyId": "ASIAISSUED"}
    assert answered["responseElements"]["assumedRoleUser"]["arn"] == switched
    change = json.loads(AuditEvent(time=AT, event="CreateUser", outcome="succeeded",
                                   request_id="r", source_ip=None, user_agent=None,
                                   principal=switcher).line())
    assert "additionalEventData" not in change and "responseElements" not in change


def _event(i: int, agent: str = "x") -> AuditEvent:
    return AuditEvent(time=AT, event="E", outcome="issued", request_id=str(i),
                      source_ip=None, user_agent=agent)


def test_the_file_sink_appends_whole_lines_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    path.parent.mkdir()
    path.write_text('{"earlier":"line"}\n')  # appended to, never truncated
    sink = FileSink(path)
    events = [[_event(t * 1000 + i, "x" * (i % 50)) for i in range(200)] for t in range(8)]
    threads = [threading.Thread(target=lambda batch=batch: [sink.emit(e) for e in batch])
               for batch in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    sink.close()  # closing twice is harmless
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier":"line"}'
    ids = sorted(json.loads(line)["requestID"] for line in lines[1:])
    assert ids == sorted(e.request_id for batch in events for e in batch)
    with pytest.raises(ValueError, match="closed"):
        sink.emit(events[0][0])  # nothing is written after closing


def test_the_file_sink_follows_logrotate_and_sighup(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    def ids(name: str) -> list[str]:
        return [json.loads(x)["requestID"] for x in (tmp_path / name).read_text().splitlines()]

    sink = FileSink(path, check_seconds=0)  # looked at before every line
    sink.emit(_event(1))
    os.rename(path, tmp_path / "audit.log.1")  # logrotate's create mode: moved...
    sink.emit(_event(2))  # ...so the next line opens a new file at the path
    os.rename(path, tmp_path / "audit.log.2")
    path.write_text("")  # logrotate made the new file itself: it is used, not replaced
    sink.emit(_event(3))
    request_reopen()  # SIGHUP: opened again, appended to, never truncated
    sink.emit(_event(4))
    sink.close()
    assert ids("audit.log.1") == ["1"]
    assert ids("audit.log.2") == ["2"]
    assert ids("audit.log") == ["3", "4"]


def test_within_a_second_of_a_move_lines_still_land_whole_in_the_moved_file(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileSink(path, check_seconds=3600)
    sink.emit(_event(1))
    os.rename(path, tmp_path / "audit.log.1")
    sink.emit(_event(2))  # not looked at yet: the open file, now audit.log.1
    request_reopen()  # the control: SIGHUP opens the path again at once
    sink.emit(_event(3))
    sink.close()
    assert [json.loads(x)["requestID"] for x in
            (tmp_path / "audit.log.1").read_text().splitlines()] == ["1", "2"]
    assert [json.loads(x)["requestID"] for x in path.read_text().splitlines()] == ["3"]


def test_the_syslog_sink_sends_rfc3164_messages_to_a_udp_receiver() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    try:
        sink = SyslogSink(f"udp://127.0.0.1:{port}", "authpriv")
        for i in range(50):
            sink.emit(_event(i))
        sink.close()  # sends what is queued before it returns
        messages = [receiver.recv(65536).decode() for _ in range(50)]
    finally:
        receiver.close()
    pri = 10 * 8 + 6  # authpriv, info
    tag = f" broker[{os.getpid()}]: "
    for i, message in enumerate(messages):
        assert message.startswith(f"<{pri}>")
        head, _, line = message.partition(tag)
        assert re.fullmatch(rf"<{pri}>[A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d \S+", head), head
        assert json.loads(line)["requestID"] == str(i)
    with pytest.raises(ValueError, match="closed"):
        sink.emit(_event(0))
