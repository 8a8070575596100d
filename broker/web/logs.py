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
from urllib.parse import unquote_plus

_SECRET_NAMES = frozenset(name.lower() for name in (
    "X-Amz-Security-Token", "X-Amz-Signature", "SigninToken", "Session", "WebIdentityToken",
    "SAMLAssertion", "SAMLResponse"))
# A value runs to the next & or whitespace, whatever else it holds: a Session sent as raw JSON
# carries quotes, and a quote must not end the redaction early.
_PARAM = re.compile(r"([?&])([^=&\s]*)=([^&\s]*)")


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced — the name compared
    as the server reads it (percent-decoded, any case), so ``Sess%69on=`` is caught too."""

    def hide(found: re.Match[str]) -> str:
        if unquote_plus(found.group(2)).lower() in _SECRET_NAMES:
            return f"{found.group(1)}{found.group(2)}=(redacted)"
        return found.group(0)

    return _PARAM.sub(hide, text)


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
