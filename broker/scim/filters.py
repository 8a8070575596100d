"""SCIM filter expressions (RFC 7644 §3.4.2.2), parsed into a small tree and evaluated in
memory against a resource as the server renders it.

    FILTER    = attrExp / logExp / valuePath / "not" "(" FILTER ")" / "(" FILTER ")"
    valuePath = attrPath "[" valFilter "]"
    attrExp   = attrPath "pr" / attrPath compareOp compValue
    compValue = false / null / true / number / string (JSON's)
    attrPath  = [URI ":"] ATTRNAME ["." subAttr]

``not`` binds tighter than ``and``, which binds tighter than ``or``; operators and keywords
are compared without regard to case. The filter never becomes a query: the server asks the
store for candidates by a key it understands (``userName eq``, ``id eq``, ``displayName eq``)
and evaluates the whole tree on each, so nothing in a filter can widen what matches.
Anything the grammar does not have — and any attribute the resource's schema does not know
(``resolve``) — is 400 invalidFilter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

from broker.scim.errors import invalid_filter

MAX_LENGTH = 4096
MAX_DEPTH = 32
COMPARE = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})


@dataclass(frozen=True)
class AttrPath:
    """An attribute, as written (names are compared without regard to case)."""

    urn: str | None
    attr: str
    sub: str | None = None

    def __str__(self) -> str:
        head = f"{self.urn}:" if self.urn else ""
        return head + self.attr + (f".{self.sub}" if self.sub else "")


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str
    value: Any


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Not:
    inner: Filter


@dataclass(frozen=True)
class ValuePath:
    """``attr[filter]``: some value of the multi-valued ``attr`` matches ``filter``, whose
    paths name its sub-attributes."""

    path: AttrPath
    filter: Filter


Filter = Union[Compare, Present, And, Or, Not, ValuePath]  # noqa: UP007 (a runtime alias)

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<punct>[()\[\]])
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![\w.]))
  | (?P<word>[A-Za-z$][A-Za-z0-9_:.$-]*)
""", re.VERBOSE)
_NAME = re.compile(r"\$?[A-Za-z][A-Za-z0-9_$-]*")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    at = 0
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None:
            raise invalid_filter(f"The filter cannot be read at character {at + 1}.")
        kind = found.lastgroup or ""
        if kind != "space":
            out.append(_Token(kind, found.group(), at))
        at = found.end()
    return out


def attr_path(text: str) -> AttrPath:
    """``[urn:]attr[.sub]``; an attribute name is ALPHA *(nameChar), ``$ref`` allowed."""
    urn: str | None = None
    rest = text
    if text.lower().startswith("urn:"):
        urn, _, rest = text.rpartition(":")
    attr, dot, sub = rest.partition(".")
    if not _NAME.fullmatch(attr) or (dot and not _NAME.fullmatch(sub)) or "." in sub:
        raise invalid_filter(f"{text[:200]} is not an attribute path.")
    return AttrPath(urn, attr, sub if dot else None)


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_LENGTH:
            raise invalid_filter(f"A filter is at most {MAX_LENGTH} characters.")
        if not text.strip():
            raise invalid_filter("The filter is empty.")
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() in words:
            self.at += 1
            return token.text.lower()
        return None

    def expect(self, punct: str) -> None:
        token = self.peek()
        if token is None or token.text != punct:
            where = "the end" if token is None else f"character {token.at + 1}"
            raise invalid_filter(f"The filter needs '{punct}' at {where}.")
        self.at += 1

    def filter(self) -> Filter:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise invalid_filter(f"A filter nests at most {MAX_DEPTH} levels.")
        node = self.conjunction()
        while self.keyword("or"):
            node = Or(node, self.conjunction())
        self.depth -= 1
        return node

    def conjunction(self) -> Filter:
        node = self.factor()
        while self.keyword("and"):
            node = And(node, self.factor())
        return node

    def factor(self) -> Filter:
        token = self.peek()
        if token is None:
            raise invalid_filter("The filter ends where an expression should begin.")
        if token.kind == "word" and token.text.lower() == "not":
            self.at += 1
            self.expect("(")
            inner = self.filter()
            self.expect(")")
            return Not(inner)
        if token.text == "(":
            self.at += 1
            inner = self.filter()
            self.expect(")")
            return inner
        if token.kind != "word":
            raise invalid_filter(f"An attribute path is needed at character {token.at + 1}.")
        self.at += 1
        path = attr_path(token.text)
        following = self.peek()
        if following is not None and following.text == "[":
            if path.sub is not None:
                raise invalid_filter(f"{path} cannot take a value filter.")
            self.at += 1
            inner = self.filter()
            self.expect("]")
            return ValuePath(path, inner)
        if self.keyword("pr"):
            return Present(path)
        op = self.keyword(*COMPARE)
        if op is None:
            raise invalid_filter(f"{path} needs an operator (eq, ne, co, sw, ew, gt, ge, lt, "
                                 "le or pr).")
        return Compare(path, op, self.value())

    def value(self) -> Any:
        token = self.peek()
        if token is None:
            raise invalid_filter("The filter ends where a value should be.")
        self.at += 1
        if token.kind == "string":
            return json.loads(token.text)
        if token.kind == "number":
            return json.loads(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.text.lower()]
        raise invalid_filter(f"A value (a string in double quotes, a number, true, false or "
                             f"null) is needed at character {token.at + 1}.")


def parse(text: str) -> Filter:
    parser = _Parser(text)
    node = parser.filter()
    rest = parser.peek()
    if rest is not None:
        raise invalid_filter(f"The filter cannot be read from character {rest.at + 1}.")
    return node


def parse_value_filter(text: str) -> Filter:
    """The ``valFilter`` inside a PATCH path's brackets."""
    return parse(text)


def paths(node: Filter, inside: AttrPath | None = None) -> Iterator[AttrPath]:
    """Every attribute a filter names, a value filter's ones as ``attr.sub``."""
    if isinstance(node, Compare | Present):
        if inside is None:
            yield node.path
        else:
            yield AttrPath(inside.urn, inside.attr, node.path.attr)
    elif isinstance(node, And | Or):
        yield from paths(node.left, inside)
        yield from paths(node.right, inside)
    elif isinstance(node, Not):
        yield from paths(node.inner, inside)
    else:
        if inside is not None:
            raise invalid_filter("A value filter cannot hold another.")
        yield from paths(node.filter, node.path)


# -- evaluation -------------------------------------------------------------------------------

def member(obj: Mapping[str, Any], name: str) -> Any:
    """The member of a JSON object by name, compared without regard to case."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def _values(resource: Mapping[str, Any], path: AttrPath) -> list[Any]:
    base: Any = resource
    if path.urn is not None:
        base = member(resource, path.urn)
        if not isinstance(base, Mapping):
            return []
    found = member(base, path.attr)
    items = found if isinstance(found, list) else [found]
    out: list[Any] = []
    for item in items:
        if path.sub is not None:
            item = member(item, path.sub) if isinstance(item, Mapping) else None
        elif isinstance(item, Mapping):  # a complex value compared by its "value"
            item = member(item, "value")
        if item is not None and item != "":
            out.append(item)
    return out


def _compare(found: Any, op: str, wanted: Any, exact: bool) -> bool:
    if isinstance(wanted, bool) or isinstance(found, bool):
        if not (isinstance(wanted, bool) and isinstance(found, bool)):
            return False
        return found == wanted if op == "eq" else found != wanted if op == "ne" else False
    a: Any
    b: Any
    if isinstance(wanted, int | float) and isinstance(found, int | float):
        a, b = found, wanted
    elif isinstance(wanted, str) and isinstance(found, str):
        a, b = (found, wanted) if exact else (found.casefold(), wanted.casefold())
    else:
        return False
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op in ("co", "sw", "ew"):
        if not isinstance(a, str):
            return False
        return b in a if op == "co" else a.startswith(b) if op == "sw" else a.endswith(b)
    return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])


CaseExact = Callable[[AttrPath], bool]


def matches(node: Filter, resource: Mapping[str, Any], case_exact: CaseExact) -> bool:
    if isinstance(node, And):
        return matches(node.left, resource, case_exact) and \
            matches(node.right, resource, case_exact)
    if isinstance(node, Or):
        return matches(node.left, resource, case_exact) or \
            matches(node.right, resource, case_exact)
    if isinstance(node, Not):
        return not matches(node.inner, resource, case_exact)
    if isinstance(node, Present):
        return bool(_values(resource, node.path))
    if isinstance(node, ValuePath):
        base: Any = resource
        if node.path.urn is not None:
            base = member(resource, node.path.urn) or {}
        found = member(base, node.path.attr)
        items = found if isinstance(found, list) else [found] if found is not None else []
        return any(isinstance(item, Mapping) and matches(
            node.filter, item, lambda p: case_exact(
                AttrPath(node.path.urn, node.path.attr, p.attr))) for item in items)
    found_values = _values(resource, node.path)
    if node.op == "ne":
        return not any(_compare(v, "eq", node.value, case_exact(node.path))
                       for v in found_values) if node.value is not None else bool(found_values)
    if node.value is None:
        return not found_values if node.op == "eq" else False
    return any(_compare(v, node.op, node.value, case_exact(node.path)) for v in found_values)


def equality_key(node: Filter, attr: str) -> Any:
    """The value ``attr eq VALUE`` pins, if the filter requires it (alone or under ``and``):
    the server reads that one candidate instead of every resource."""
    if isinstance(node, Compare) and node.op == "eq" and node.path.sub is None and \
            node.path.attr.lower() == attr.lower() and isinstance(node.value, str):
        return node.value
    if isinstance(node, And):
        left = equality_key(node.left, attr)
        return left if left is not None else equality_key(node.right, attr)
    return None
