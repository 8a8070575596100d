"""The HTTP request as the AWS protocols see it, and the one way its query and form are decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes


@dataclass(frozen=True)
class HttpRequest:
    """A request as received: the path and query exactly as on the wire (UTF-8 text), header
    values as UTF-8 with any other byte kept as a surrogate escape."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    @property
    def by_name(self) -> dict[str, list[str]]:
        """Every value of every header, by lower-case name, in the order received; worked
        out once per request (kept in the instance's dict, as functools.cached_property would,
        without the lock it takes on Python 3.11)."""
        found: dict[str, list[str]] | None = self.__dict__.get("_by_name")
        if found is None:
            found = {}
            for key, value in self.headers:
                found.setdefault(key.lower(), []).append(value)
            self.__dict__["_by_name"] = found
        return found

    def header(self, name: str) -> str | None:
        """The first value of a header; ``name`` in lower case."""
        values = self.by_name.get(name)
        return values[0] if values else None


def parse_query(raw: str) -> list[tuple[str, str]]:
    """The decoded (name, value) pairs of a raw query string, in order.

    ``+`` means a space, as in HTML forms: the canonical query and the Query parameters are
    both computed from these pairs, so they can never disagree about what was signed.
    Raises UnicodeDecodeError when a name or value is not UTF-8.
    """
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_decode(name), _decode(value)))
    return pairs


def _decode(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    spaced = text.replace("+", " ")
    # Base64 values (a SAML assertion, a session token) escape only "+", "/" and "=", as
    # upper-case escapes; ARNs ":" and "/". Those are decoded by str.replace, at C speed: the
    # three of base64 first (each pass over a six-kilobyte assertion costs microseconds), the
    # others only if an escape is left. Each becomes a character that is neither "%" nor a hex
    # digit, so no pass can make or unmake another's escape ("%25", the escape of "%" itself,
    # is left for the general way). If any other escape is left, decode it all the general
    # way, from the original.
    fast = spaced.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
    if "%" in fast:
        fast = (fast.replace("%3A", ":").replace("%2b", "+").replace("%2f", "/")
                .replace("%3d", "=").replace("%3a", ":"))
        if "%" in fast:
            return unquote_to_bytes(spaced).decode("utf-8")
    return fast
