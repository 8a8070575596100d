"""Logging of HTTP requests without the secrets some of them carry in their query string.

A presigned URL holds its session token and signature in the query (``X-Amz-Security-Token``,
``X-Amz-Signature``); uvicorn's access log would write them down. The filter replaces their
values before any handler sees the record; so it does for the federation endpoint's
``SigninToken`` and ``Session`` (temporary credentials), and for the identity tokens and SAML
assertions an unsigned STS call may carry in a GET query string.
"""

from __future__ import annotations

import logging
import re

_SECRET_PARAMS = re.compile(
    r"([?&](?:X-Amz-Security-Token|X-Amz-Signature|SigninToken|Session|WebIdentityToken|"
    r"SAMLAssertion|SAMLResponse)=)[^&\s\"]*", re.I)


def redact(text: str) -> str:
    return _SECRET_PARAMS.sub(r"\1(redacted)", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access log (once per process)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
