"""Wildcard patterns: ``*`` matches any run of characters, ``?`` any one character.

Actions match case-insensitively, resources and ARN components case-sensitively. A pattern is
compiled to a regular expression once; a pattern holding policy variables is compiled per
request from its substituted text (cached, bounded).
"""

from __future__ import annotations

import functools
import re

# Stand-ins for a literal "*" and "?" (from ${*}, ${?} or a substituted variable's value): kept
# apart from the pattern's own wildcards until the pattern is compiled or compared.
LITERAL_STAR = "\ue000"
LITERAL_QUESTION = "\ue001"
_LITERALS = str.maketrans({LITERAL_STAR: "*", LITERAL_QUESTION: "?"})


def literal(text: str) -> str:
    """The text with the stand-ins turned back into the characters they stand for."""
    return text.translate(_LITERALS)


@functools.lru_cache(maxsize=4096)
def glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(literal(ch)))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    if pattern == "*":
        return True  # what ".*" with DOTALL matches: anything
    # A pattern without a wildcard or a stand-in is plain text (most actions and ARNs in
    # policies): compared as text, without the compiled pattern's cache lookup and match.
    if "*" not in pattern and "?" not in pattern and LITERAL_STAR not in pattern \
            and LITERAL_QUESTION not in pattern:
        if not ignore_case:
            return pattern == text
        # Lower-casing is the regular expression's case folding only within ASCII (it
        # also folds the Kelvin sign to "k", for one): outside it, the pattern decides.
        if pattern.isascii() and text.isascii():
            return pattern.lower() == text.lower()
    return glob(pattern, ignore_case=ignore_case).fullmatch(text) is not None


def split_arn(text: str) -> tuple[str, str, str, str, str, str] | None:
    """The six components of an ARN (the last may hold ':' and '/'), or None."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    return (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])


def arn_matches(pattern: str, text: str) -> bool:
    """ArnEquals / ArnLike: each of the six components matched on its own, with wildcards."""
    want, have = split_arn(pattern), split_arn(text)
    if want is None or have is None:
        return False
    return all(matches(w, h) for w, h in zip(want, have, strict=True))
