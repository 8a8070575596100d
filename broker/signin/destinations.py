"""Where sign-in may send a browser: the one check against open redirects.

A destination (a SAML RelayState, later the federation endpoint's Destination) is followed only
if it is

* a path on the broker itself that is the console (``/console``, ``/console/...``), IAM
  Identity Center's access portal (``/start/...``: the Issuer its "Management console" links
  back to) or a path prefix the administrator listed, or
* an absolute ``http(s)`` URL whose scheme, host and port equal those of a listed application
  and whose path lies under that application's path,

and it carries no user-info, no backslash, no control character (CR/LF header injection) and
no whitespace. Everything else — ``//evil.example``, ``/\\evil.example``,
``https://host.evil.example``, ``https://host@evil.example``, ``javascript:`` — is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

CONSOLE = "/console"
PORTAL = "/start"


@dataclass(frozen=True)
class Destinations:
    public_url: str
    allowed: tuple[str, ...] = ()

    def check(self, destination: str) -> str | None:
        """The destination to redirect to, or None if it is not allowed."""
        if not destination or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" or c == "\\"
                                  for c in destination):
            return None
        if destination.startswith("/"):
            return destination if self._local(destination) else None
        parts = _split(destination)
        if parts is None:
            return None
        own = _split(self.public_url)
        if own is not None and _origin(parts) == _origin(own):
            base = own.path.rstrip("/")
            if parts.path.startswith(base + "/") and self._local(parts.path[len(base):]):
                return destination
        for prefix in self.allowed:
            if prefix.startswith("/"):
                continue
            allowed = _split(prefix)
            if allowed is not None and _origin(parts) == _origin(allowed) and \
                    _under(parts.path or "/", allowed.path or "/"):
                return destination
        return None

    def _local(self, path: str) -> bool:
        if path.startswith("//"):
            return False
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            return False
        prefixes: Sequence[str] = (CONSOLE, PORTAL,
                                   *(p for p in self.allowed if p.startswith("/")))
        return any(_under(parts.path, p) for p in prefixes)


def _split(url: str) -> _Parts | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    default = 443 if parts.scheme == "https" else 80
    return _Parts(parts.scheme, parts.hostname.lower(), port or default, parts.path)


@dataclass(frozen=True)
class _Parts:
    scheme: str
    host: str
    port: int
    path: str


def _origin(parts: _Parts) -> tuple[str, str, int]:
    return parts.scheme, parts.host, parts.port


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it (``/app`` covers ``/app/x``, not ``/apple``,
    and never ``/app/../admin``)."""
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return False
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")
