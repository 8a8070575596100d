from __future__ import annotations

import logging

from broker.web.logs import RedactSecrets, redact


def test_presigned_secrets_are_redacted_from_access_log_lines() -> None:
    path = ("/?Action=GetCallerIdentity&X-Amz-Credential=AKIAX%2F20260101&"
            "X-Amz-Security-Token=SECRETTOKEN&X-Amz-Signature=abc123&Version=2011-06-15")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("1.2.3.4", "GET", path, "1.1", 200),
                               None)
    assert RedactSecrets().filter(record)
    line = record.getMessage()
    assert "SECRETTOKEN" not in line and "abc123" not in line
    assert "X-Amz-Security-Token=(redacted)&X-Amz-Signature=(redacted)&Version=" in line
    assert "X-Amz-Credential=AKIAX" in line  # not a secret: kept for the reader
    assert redact("/?Action=ListUsers") == "/?Action=ListUsers"  # the control


def test_a_session_sent_as_raw_json_is_redacted_whole() -> None:
    """h11 accepts quotes in a request target: a Session parameter sent as unencoded JSON is
    redacted to the next & or space, quotes and all (the control: a harmless parameter after
    it stays)."""
    line = ('127.0.0.1:5 - "GET /federation?Action=getSigninToken&Session={"sessionId":"ASIAX",'
            '"sessionKey":"SECRETKEY","sessionToken":"TOKEN"}&SessionDuration=900 HTTP/1.1" 200')
    out = redact(line)
    assert "SECRETKEY" not in out and "TOKEN" not in out and "ASIAX" not in out
    assert "Session=(redacted)&SessionDuration=900 HTTP/1.1\" 200" in out
    assert out.startswith('127.0.0.1:5 - "GET /federation?Action=getSigninToken&')
