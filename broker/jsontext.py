"""Text that arrives from outside, and the JSON in it, read one way.

Every JSON document the broker reads from a request or from a document it fetches — policy
documents, a web identity token's header and claims, the federation endpoint's ``Session``,
JWKS and discovery documents — is read by ``loads``, which refuses what ``json.loads`` lets
through:

* a member given twice (``{"sub": "a", "sub": "b"}`` could be read two ways);
* ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON, and numbers too large for a
  float (``1e400``), which would be read as infinity and written back as ``Infinity``;
* nesting too deep for the parser (a ``RecursionError`` otherwise);
* half of a surrogate pair on its own (``"\\ud800"``): JSON's ``\\u`` escapes can spell it,
  Python decodes it to a ``str`` that cannot be encoded as UTF-8, and whatever then stores,
  hashes, signs or compares that text fails deep inside a request. No such string is text.

Everything is refused with ``JsonRefused`` (a ``ValueError``), which each interface turns into
its own error (``MalformedPolicyDocument``, ``InvalidIdentityToken``, a 400 answer).
``is_text`` is the check for a single string (``loads`` applies it to every string it reads).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class JsonRefused(ValueError):
    """JSON the broker will not read; the message says why."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of either half of a surrogate pair: only JSON holding one can decode to a lone
# half, so honest documents (nearly all of them) skip the walk below.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (it holds no lone surrogate)."""
    return value.isascii() or _LONE_SURROGATE.search(value) is None


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise JsonRefused(f"the member {name[:64]!r} appears twice")
        out[name] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A number as a float, unless it is too large for one: 1e400 would be read as infinity,
    which json.dumps writes back as Infinity, which is not JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:32]} is too large")
    return value


# One decoder for every document: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_repeats, parse_constant=_refuse_constant,
                            parse_float=_finite)


def loads(text: str | bytes) -> Any:
    """The value of a JSON document from outside; JsonRefused when it is not one the broker
    reads (bytes must be UTF-8)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused("the document is not UTF-8") from None
    elif not is_text(text):
        raise JsonRefused("the document is not text: it holds a lone surrogate")
    try:
        value = _DECODER.decode(text)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused("the document is nested too deeply") from None
    except ValueError as exc:
        raise JsonRefused(str(exc)) from None
    if _SURROGATE_ESCAPE.search(text) is not None and _holds_lone_surrogate(value):
        raise JsonRefused("a string holds a lone surrogate (a \\u escape of half a "
                          "surrogate pair), which is not text")
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_text(item):
                return True
        elif isinstance(item, dict):
            for name, member in item.items():
                if not is_text(name):
                    return True
                pending.append(member)
        elif isinstance(item, list):
            pending.extend(item)
    return False
