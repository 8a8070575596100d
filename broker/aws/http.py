"""The HTTP request as the AWS protocols see it, and the one way its query and form are decoded."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from broker.frozen import frozen


@frozen
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


# Every escape of an ASCII character, in any mix of letter case: "%3a" and "%3A" are ":".
_ASCII_ESCAPES: dict[str, str] = {
    f"{high}{low}": chr(int(f"{high}{low}", 16))
    for high in "01234567" for low in "0123456789abcdefABCDEF"
}
# Up to this length a value is decoded by str.replace passes; beyond it, in one split.
_SHORT = 256


def _decode(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    spaced = text.replace("+", " ")
    if len(spaced) > _SHORT:
        return _decode_long(spaced)
    # Short values (ARNs, names, numbers) escape few characters, mostly ":" and "/": those
    # are decoded by str.replace, at C speed. Each becomes a character that is neither "%"
    # nor a hex digit, so no pass can make or unmake another's escape ("%25", the escape of
    # "%" itself, is left for the general way). If any other escape is left, decode it all
    # the general way, from the original.
    fast = spaced.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
    if "%" in fast:
        fast = (fast.replace("%3A", ":").replace("%2b", "+").replace("%2f", "/")
                .replace("%3d", "=").replace("%3a", ":"))
        if "%" in fast:
            return unquote_to_bytes(spaced).decode("utf-8")
    return fast


def _decode_long(spaced: str) -> str:
    """A long value (a SAML assertion, a session token: base64, with "+", "/" and "=" escaped
    here and there) in one pass: split at each "%", each escape of an ASCII character looked
    up; a str.replace pass over six kilobytes costs more than all of it. Any other escape (a
    byte of a multi-byte UTF-8 character, or a "%" not followed by two hex digits) sends the
    value the general way."""
    pieces = spaced.split("%")
    if len(pieces) == 1:
        return spaced
    out = [pieces[0]]
    escapes = _ASCII_ESCAPES
    for piece in pieces[1:]:
        char = escapes.get(piece[:2])
        if char is None:
            return unquote_to_bytes(spaced).decode("utf-8")
        out.append(char)
        out.append(piece[2:])
    return "".join(out)
