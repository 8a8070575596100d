"""Input shapes of the Query protocol: types, constraints, flattening and AWS's validation errors.

Each operation declares its input as a ``Structure`` of named members, with the same minimum,
maximum, pattern and enum AWS's service model gives (patterns are written in the model's own
Java syntax and translated once). ``parse`` turns the flat form parameters
(``Tags.member.1.Key=...``) into Python values and collects every constraint a value fails,
reporting them the way AWS does::

    1 validation error detected: Value 'x!' at 'userName' failed to satisfy constraint:
    Member must satisfy regular expression pattern: [\\w+=,.@-]+

tests/conformance/test_botocore_models.py compares every declared shape with botocore's model.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regex

from broker.aws.errors import ValidationError


class Shape:
    type_name = "shape"


@dataclass(frozen=True)
class String(Shape):
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    sensitive: bool = False  # AWS's model marks secrets and tokens: their values are never shown
    type_name = "string"

    def __post_init__(self) -> None:
        if self.pattern is not None:
            compile_pattern(self.pattern)  # a pattern that cannot compile fails at import


@dataclass(frozen=True)
class Integer(Shape):
    min: int | None = None
    max: int | None = None
    type_name = "integer"


@dataclass(frozen=True)
class Boolean(Shape):
    type_name = "boolean"


@dataclass(frozen=True)
class ListOf(Shape):
    member: Shape
    min: int | None = None
    max: int | None = None
    type_name = "list"


@dataclass(frozen=True)
class MapOf(Shape):
    """A JSON object of keys to values (JSON protocols only)."""

    key: Shape
    value: Shape
    min: int | None = None
    max: int | None = None
    type_name = "map"


@dataclass(frozen=True)
class Timestamp(Shape):
    """A point in time: epoch seconds in the JSON protocols (ISO 8601 in the Query one)."""

    type_name = "timestamp"


@dataclass(frozen=True)
class Document(Shape):
    """Any JSON value, taken as it is (a model's ``document`` structure: identitystore's
    AttributeValue). botocore calls its type a structure."""

    type_name = "structure"


@dataclass(frozen=True)
class Member:
    name: str
    shape: Shape
    required: bool = False


@dataclass(frozen=True)
class Structure(Shape):
    members: tuple[Member, ...] = ()
    type_name = "structure"

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None


def struct(*members: Member) -> Structure:
    return Structure(members)


def required(name: str, shape: Shape) -> Member:
    return Member(name, shape, required=True)


def optional(name: str, shape: Shape) -> Member:
    return Member(name, shape)


# -- Java (AWS model) regular expressions -------------------------------------------------------

_HEX = re.compile(r"[0-9A-Fa-f]{4,6}")


@functools.cache
def compile_pattern(java: str) -> regex.Pattern[str]:
    """Translate a pattern from AWS's models (Java syntax) for the ``regex`` module.

    ``\\w`` and ``\\d`` are ASCII in Java; ``\\uXXXX`` is a code point, and the models write
    the supplementary planes as ``\\u10000-\\u10FFFF``.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "\\" and i + 1 < len(java):
            nxt = java[i + 1]
            if nxt == "u":
                match = _HEX.match(java, i + 2)
                if match is None:
                    raise ValueError(f"bad \\u escape in {java!r}")
                digits = match.group()
                if int(digits, 16) > 0x10FFFF:
                    digits = digits[:4]
                out.append(f"\\U{int(digits, 16):08X}")
                i += 2 + len(digits)
                continue
            if nxt == "w":
                out.append("A-Za-z0-9_" if in_class else "[A-Za-z0-9_]")
            elif nxt == "d":
                out.append("0-9" if in_class else "[0-9]")
            else:
                out.append(java[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return regex.compile("".join(out))


# -- parsing flat parameters --------------------------------------------------------------------


def parse(shape: Structure, params: Mapping[str, str]) -> dict[str, Any]:
    """Typed, validated input. Raises ValidationError listing every fault, as AWS does."""
    faults: list[str] = []
    value = _read_struct(shape, params, "", "", faults)
    if faults:
        raise ValidationError.from_faults(faults)
    return value


def _wire_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _error_path(path: str, name: str) -> str:
    lowered = name[:1].lower() + name[1:]
    return f"{path}.{lowered}" if path else lowered


def _member_paths(shape: Structure, wire: str,
                  where: str) -> tuple[tuple[Member, str, str], ...]:
    """Each member with its wire key and error path. Those of a top-level input (every
    request's) are worked out once and kept on the shape; nested ones, whose paths carry list
    indexes, each time."""
    if not wire and not where:
        found: tuple[tuple[Member, str, str], ...] | None = shape.__dict__.get("_top_paths")
        if found is not None:
            return found
    paths = tuple((m, _wire_path(wire, m.name), _error_path(where, m.name))
                  for m in shape.members)
    if not wire and not where:
        object.__setattr__(shape, "_top_paths", paths)
    return paths


def _read_struct(shape: Structure, params: Mapping[str, str], wire: str, where: str,
                 faults: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for member, key, at in _member_paths(shape, wire, where):
        value = _read(member.shape, params, key, at, faults)
        if value is None:
            if member.required:
                faults.append(f"Value null at '{at}' failed to satisfy constraint: "
                              "Member must not be null")
            continue
        result[member.name] = value
    return result


def _read(shape: Shape, params: Mapping[str, str], key: str, at: str,
          faults: list[str]) -> Any:
    if type(shape) is String:
        raw = params.get(key)
        return None if raw is None else _scalar(shape, raw, at, faults)
    if isinstance(shape, ListOf):
        return _read_list(shape, params, key, at, faults)
    if isinstance(shape, Structure):
        prefix = key + "."
        if not any(k.startswith(prefix) for k in params):
            return None
        return _read_struct(shape, params, key, at, faults)
    raw = params.get(key)
    if raw is None:
        return None
    return _scalar(shape, raw, at, faults)


def _read_list(shape: ListOf, params: Mapping[str, str], key: str, at: str,
               faults: list[str]) -> list[Any] | None:
    prefix = key + ".member."
    indexes: set[int] = set()
    for name in params:
        if name.startswith(prefix):
            head = name[len(prefix) :].split(".", 1)[0]
            if head.isascii() and head.isdigit() and head[0] != "0" and len(head) <= 6:
                indexes.add(int(head))
            else:
                faults.append(f"Value '{_show(name)}' at '{at}' failed to satisfy constraint: "
                              "Member must be a list index from 1 to 999999")
    if not indexes:
        return [] if key in params else None
    items = []
    for index in sorted(indexes):
        item_key = f"{prefix}{index}"
        item_at = f"{at}.{index}.member"
        value = _read(shape.member, params, item_key, item_at, faults)
        if value is None:
            faults.append(f"Value null at '{item_at}' failed to satisfy constraint: "
                          "Member must not be null")
            continue
        items.append(value)
    _check_length(items, shape.min, shape.max, at, faults, shown=_show_list(items))
    return items


def _scalar(shape: Shape, raw: str, at: str, faults: list[str]) -> Any:
    if isinstance(shape, String):
        found: list[str] = []
        if shape.pattern is not None and not compile_pattern(shape.pattern).fullmatch(raw):
            found.append(f"Value '{_show(raw)}' at '{at}' failed to satisfy constraint: "
                         f"Member must satisfy regular expression pattern: {shape.pattern}")
        _check_length(raw, shape.min, shape.max, at, found, shown=raw)
        if shape.enum is not None and raw not in shape.enum:
            found.append(f"Value '{_show(raw)}' at '{at}' failed to satisfy constraint: "
                         f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        if shape.sensitive:
            # A token or secret is never echoed (it would reach the logs and the audit trail).
            found = [f"Value at '{at}' " + f.split(f"' at '{at}' ", 1)[1] for f in found]
        faults += found
        return raw
    if isinstance(shape, Integer):
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d{1,18}", text):
            faults.append(f"Value '{_show(raw)}' at '{at}' failed to satisfy constraint: "
                          "Member must be an integer")
            return raw
        number = int(text)
        if shape.min is not None and number < shape.min:
            faults.append(f"Value '{number}' at '{at}' failed to satisfy constraint: "
                          f"Member must have value greater than or equal to {shape.min}")
        if shape.max is not None and number > shape.max:
            faults.append(f"Value '{number}' at '{at}' failed to satisfy constraint: "
                          f"Member must have value less than or equal to {shape.max}")
        return number
    if isinstance(shape, Boolean):
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            faults.append(f"Value '{_show(raw)}' at '{at}' failed to satisfy constraint: "
                          "Member must be true or false")
            return raw
        return lowered == "true"
    raise TypeError(f"no scalar reader for {shape!r}")


def _check_length(value: str | list[Any], low: int | None, high: int | None, at: str,
                  faults: list[str], *, shown: str) -> None:
    if low is not None and len(value) < low:
        faults.append(f"Value '{_show(shown)}' at '{at}' failed to satisfy constraint: "
                      f"Member must have length greater than or equal to {low}")
    if high is not None and len(value) > high:
        faults.append(f"Value '{_show(shown)}' at '{at}' failed to satisfy constraint: "
                      f"Member must have length less than or equal to {high}")


def _show(text: str, limit: int = 256) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show_list(items: list[Any]) -> str:
    def one(item: Any) -> str:
        if isinstance(item, dict):
            return "{" + ", ".join(f"{k}: {v}" for k, v in item.items()) + "}"
        return str(item)

    return "[" + ", ".join(one(i) for i in items) + "]"


# -- JSON documents (JSON 1.0/1.1 and rest-json protocols) --------------------------------------


class SerializationFault(Exception):
    """A JSON value of the wrong type for its member: AWS's SerializationException."""


def parse_document(shape: Structure, doc: Any) -> dict[str, Any]:
    """Typed, validated input from a request's JSON body (``jsontext.loads``'s result).

    A value of the wrong JSON type is a SerializationFault (raised at once, as AWS's
    deserializer stops at the first); every constraint a well-typed value breaks is
    collected and raised as one ``ShapeFaults``, in the words of ``parse``. Members the
    model does not know are ignored, and ``null`` is a member left out, as on AWS."""
    faults: list[Fault] = []
    value = _doc_struct(shape, doc, "", faults)
    if faults:
        raise ShapeFaults(faults)
    return value


@dataclass(frozen=True)
class Fault:
    reason: str  # INPUT_REQUIRED, INVALID_PATTERN, MIN_LENGTH_EXCEEDED, ... (AWS's reasons)
    text: str


class ShapeFaults(Exception):
    def __init__(self, faults: list[Fault]) -> None:
        super().__init__(faults)
        self.faults = faults

    def message(self) -> str:
        noun = "error" if len(self.faults) == 1 else "errors"
        return f"{len(self.faults)} validation {noun} detected: " + \
            "; ".join(f.text for f in self.faults)


_JSON_TYPES = {"string": "STRING_VALUE", "integer": "NUMBER_VALUE", "boolean": "BOOLEAN_VALUE",
               "list": "START_ARRAY", "structure": "START_OBJECT", "map": "START_OBJECT",
               "timestamp": "NUMBER_VALUE"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, list):
        return "START_ARRAY"
    return "START_OBJECT"


def _wrong_type(shape: Shape, value: Any, at: str) -> SerializationFault:
    return SerializationFault(
        f"{_json_kind(value)} can not be converted to {_JSON_TYPES[shape.type_name]}"
        f" at '{at or 'input'}'")


def _doc_struct(shape: Structure, doc: Any, at: str, faults: list[Fault]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _wrong_type(shape, doc, at)
    result: dict[str, Any] = {}
    for member in shape.members:
        where = _error_path(at, member.name)
        raw = doc.get(member.name)
        if raw is None:
            if member.required:
                faults.append(Fault("INPUT_REQUIRED", f"Value null at '{where}' failed to "
                                    "satisfy constraint: Member must not be null"))
            continue
        result[member.name] = _doc_value(member.shape, raw, where, faults)
    return result


def _doc_value(shape: Shape, raw: Any, at: str, faults: list[Fault]) -> Any:
    if isinstance(shape, String):
        if not isinstance(raw, str):
            raise _wrong_type(shape, raw, at)
        found: list[str] = []
        _scalar(shape, raw, at, found)
        faults += [Fault(_reason(text), text) for text in found]
        return raw
    if isinstance(shape, Integer):
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, float) and raw.is_integer() and abs(raw) < 2**53:
                raw = int(raw)
            else:
                raise _wrong_type(shape, raw, at)
        found = []
        _scalar(shape, str(raw), at, found)
        faults += [Fault(_reason(text), text) for text in found]
        return raw
    if isinstance(shape, Boolean):
        if not isinstance(raw, bool):
            raise _wrong_type(shape, raw, at)
        return raw
    if isinstance(shape, Document):
        return raw
    if isinstance(shape, Timestamp):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise _wrong_type(shape, raw, at)
        return raw
    if isinstance(shape, ListOf):
        if not isinstance(raw, list):
            raise _wrong_type(shape, raw, at)
        items = []
        for index, item in enumerate(raw, start=1):
            where = f"{at}.{index}.member"
            if item is None:
                faults.append(Fault("INPUT_REQUIRED", f"Value null at '{where}' failed to "
                                    "satisfy constraint: Member must not be null"))
                continue
            items.append(_doc_value(shape.member, item, where, faults))
        found = []
        _check_length(items, shape.min, shape.max, at, found, shown=_show_list(items))
        faults += [Fault(_reason(text), text) for text in found]
        return items
    if isinstance(shape, MapOf):
        if not isinstance(raw, dict):
            raise _wrong_type(shape, raw, at)
        out = {}
        for key, item in raw.items():
            _doc_value(shape.key, key, f"{at}.key", faults)
            if item is None:
                continue
            out[key] = _doc_value(shape.value, item, f"{at}.{key}", faults)
        return out
    if isinstance(shape, Structure):
        return _doc_struct(shape, raw, at, faults)
    raise TypeError(f"no JSON reader for {shape!r}")


_REASONS = (
    ("Member must satisfy regular expression pattern", "INVALID_PATTERN"),
    ("Member must have length greater than or equal to", "MIN_LENGTH_EXCEEDED"),
    ("Member must have length less than or equal to", "MAX_LENGTH_EXCEEDED"),
    ("Member must satisfy enum value set", "INVALID_ENUM"),
    ("Member must have value greater than or equal to", "MIN_VALUE_EXCEEDED"),
    ("Member must have value less than or equal to", "MAX_VALUE_EXCEEDED"),
)


def _reason(text: str) -> str:
    for phrase, reason in _REASONS:
        if phrase in text:
            return reason
    return "INVALID_INPUT"
