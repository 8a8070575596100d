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
