"""Policy variables: ``${aws:username}``, ``${aws:PrincipalTag/team}``, ``${saml:sub}``...

In policies of version 2012-10-17, a variable in a Resource, a NotResource or a condition value
of a String or ARN operator is replaced by the request's value of that condition key.
``${*}``, ``${?}`` and ``${$}`` stand for the literal characters; ``${key, 'default'}`` gives the
value to use when the key is missing. A variable whose key is missing (and has no default), or
holds several values, makes its pattern match nothing. Substituted values are literal text:
a user named ``*`` gains no wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.policy.context import Context
from broker.policy.matching import LITERAL_QUESTION, LITERAL_STAR

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULTED = re.compile(r"^\s*([^,\s][^,]*?)\s*,\s*'([^']*)'\s*$")
_LITERALS = {"*": LITERAL_STAR, "?": LITERAL_QUESTION, "$": "$"}


@dataclass(frozen=True)
class Template:
    """A pattern with variables in it: literal text and (key, default) holes."""

    parts: tuple[str | tuple[str, str | None], ...]

    def names(self) -> list[str]:
        """The condition keys the template reads."""
        return [p[0] for p in self.parts if isinstance(p, tuple)]

    def render(self, context: Context) -> str | None:
        """The pattern for this request; None if a variable has no single value."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            key, default = part
            values = context.get(key)
            if values is None or len(values) == 0:
                if default is None:
                    return None
                value = default
            elif len(values) == 1:
                value = values[0]
            else:
                return None
            out.append(value.replace("*", LITERAL_STAR).replace("?", LITERAL_QUESTION))
        return "".join(out)


def template(text: str) -> str | Template:
    """The text itself when it holds no variable, else its Template."""
    if "${" not in text:
        return text
    parts: list[str | tuple[str, str | None]] = []
    at = 0
    for match in _VARIABLE.finditer(text):
        parts.append(text[at : match.start()])
        inner = match.group(1)
        if inner in _LITERALS:
            parts.append(_LITERALS[inner])
        else:
            defaulted = _DEFAULTED.match(inner)
            if defaulted:
                parts.append((defaulted.group(1).strip(), defaulted.group(2)))
            else:
                parts.append((inner.strip(), None))
        at = match.end()
    parts.append(text[at:])
    merged: list[str | tuple[str, str | None]] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        elif part != "":
            merged.append(part)
    if all(isinstance(p, str) for p in merged):
        return "".join(p for p in merged if isinstance(p, str))
    return Template(tuple(merged))
