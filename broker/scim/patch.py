"""PATCH (RFC 7644 §3.5.2) applied to a resource as the server renders it, in the dialects
the identity providers send:

* ``op`` compared without regard to case (Entra ID's ``"Replace"``, ``"Add"``);
* a path-less ``add`` / ``replace`` whose value is an object of attributes, each key itself a
  path (Okta's ``{"active": false}``, Entra ID's ``{"name.givenName": …}``, an extension's
  URN with an object);
* dotted paths (``name.familyName``), value filters (``emails[type eq "work"].value``,
  ``members[value eq "…"]``), the enterprise extension's URN paths
  (``urn:…:enterprise:2.0:User:department``, and the URN alone);
* ``remove`` of ``members`` with a ``value`` list (Entra ID's way of naming whom).

The identity store keeps one value of each multi-valued User attribute, so ``add`` to one
replaces its value. ``id``, ``meta`` and ``schemas`` are readOnly: an operation that would
change them is 400 mutability (RFC 7644 §3.5.2); one that gives their current value (Okta
sends the group's ``id`` back) changes nothing. Group members are not applied here but
returned as ``MemberOp``s, which the server carries out against the directory.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.scim import resources as res
from broker.scim.errors import invalid_path, invalid_syntax, invalid_value, mutability, no_target
from broker.scim.filters import (
    And,
    AttrPath,
    Compare,
    Filter,
    attr_path,
    matches,
    member,
    parse_value_filter,
)

MAX_OPERATIONS = 1000
OPS = ("add", "replace", "remove")


@dataclass(frozen=True)
class PatchPath:
    urn: str | None
    attr: str | None  # None: the extension's URN alone
    filter: Filter | None = None
    sub: str | None = None


@dataclass(frozen=True)
class Operation:
    op: str
    path: PatchPath | None
    value: Any


@dataclass(frozen=True)
class MemberOp:
    """A change of a group's members: ``add`` / ``remove`` these values, ``replace`` them
    all with these, or ``remove`` those the filter matches."""

    action: str
    values: list[dict[str, Any]] = field(default_factory=list)
    filter: Filter | None = None


def parse_path(kind: res.Kind, text: Any) -> PatchPath:
    if not isinstance(text, str) or not text:
        raise invalid_path("A path is a non-empty string.")
    if len(text) > 1024:
        raise invalid_path("A path is at most 1024 characters.")
    if kind.extension(text) is not None:
        return PatchPath(kind.extension_urn(text), None)
    try:
        if "[" in text:
            head, _, rest = text.partition("[")
            close = rest.rfind("]")
            if close < 0:
                raise invalid_path(f"The path {text[:200]} has no closing ']'.")
            inner, tail = rest[:close], rest[close + 1:]
            where = attr_path(head)
            if where.sub is not None or (tail and (not tail.startswith(".") or
                                                   "." in tail[1:] or len(tail) < 2)):
                raise invalid_path(f"The path {text[:200]} is not valid.")
            found = parse_value_filter(inner)
            return PatchPath(where.urn, where.attr, found, tail[1:] or None)
        where = attr_path(text)
    except Exception as exc:
        if getattr(exc, "scim_type", None) == "invalidFilter" and "[" in text:
            raise invalid_path(f"The value filter of {text[:200]} is not valid: "
                               f"{getattr(exc, 'detail', '')}") from None
        if getattr(exc, "scim_type", None) in ("invalidFilter", "invalidPath"):
            raise invalid_path(f"{text[:200]} is not an attribute path.") from None
        raise
    return PatchPath(where.urn, where.attr, None, where.sub)


def parse(kind: res.Kind, body: Any) -> list[Operation]:
    if not isinstance(body, Mapping):
        raise invalid_syntax("A PATCH request is a JSON object.")
    schemas = member(body, "schemas")
    if schemas is not None and (not isinstance(schemas, list) or
                                res.PATCH_SCHEMA not in schemas):
        raise invalid_syntax(f"A PATCH request's schemas are [\"{res.PATCH_SCHEMA}\"].")
    ops = member(body, "Operations")
    if not isinstance(ops, list) or not ops:
        raise invalid_syntax("A PATCH request needs Operations, a non-empty list.")
    if len(ops) > MAX_OPERATIONS:
        raise invalid_syntax(f"A PATCH request holds at most {MAX_OPERATIONS} operations.")
    out = []
    for op in ops:
        if not isinstance(op, Mapping):
            raise invalid_syntax("Each operation is an object with op, path and value.")
        name = member(op, "op")
        if not isinstance(name, str) or name.lower() not in OPS:
            raise invalid_syntax("An operation's op is add, replace or remove.")
        path_text = member(op, "path")
        path = None if path_text is None else parse_path(kind, path_text)
        out.append(Operation(name.lower(), path, member(op, "value")))
    return out


def apply(kind: res.Kind, doc: Mapping[str, Any], operations: list[Operation]
          ) -> tuple[dict[str, Any], list[MemberOp]]:
    out = copy.deepcopy(dict(doc))
    members: list[MemberOp] = []
    for op in operations:
        if op.path is None:
            if op.op == "remove":
                raise no_target("A remove operation needs a path.")
            if not isinstance(op.value, Mapping):
                raise invalid_value("An operation without a path takes an object of "
                                    "attributes as its value.")
            for key, value in op.value.items():
                if not isinstance(key, str):
                    raise invalid_value("Each member of the value names an attribute.")
                if key.lower() == "schemas":
                    continue
                _one(kind, out, op.op, parse_path(kind, key), value, members, pathless=True)
        else:
            _one(kind, out, op.op, op.path, op.value, members, pathless=False)
    return out, members


def _read_only(doc: Mapping[str, Any], name: str, op: str, value: Any) -> None:
    current = member(doc, name)
    if op != "remove" and value == current:
        return
    raise mutability(f"{name} is readOnly: it cannot be changed.")


def _merge(target: dict[str, Any], value: Mapping[str, Any]) -> None:
    for key, item in value.items():
        existing = next((k for k in target if k.lower() == str(key).lower()), None)
        if existing is not None:
            del target[existing]
        target[str(key)] = item


def _one(kind: res.Kind, doc: dict[str, Any], op: str, path: PatchPath, value: Any,
         members: list[MemberOp], *, pathless: bool) -> None:
    if op != "remove" and value is None and path.attr is not None and \
            path.attr.lower() not in res.READ_ONLY:
        if op == "add":
            raise invalid_value(f"An add of {path.attr} needs a value.")
        op = "remove"  # replace with null: the attribute goes (RFC 7644 §3.5.2.3)
    container: dict[str, Any] = doc
    if path.urn is not None and kind.extension(path.urn) is not None:
        urn = kind.extension_urn(path.urn) or path.urn
        existing = next((k for k in doc if k.lower() == urn.lower()), None)
        if existing is not None and existing != urn:
            doc[urn] = doc.pop(existing)
        if path.attr is None:  # the extension itself
            if op == "remove":
                doc.pop(urn, None)
            elif not isinstance(value, Mapping):
                raise invalid_value(f"{urn} takes an object of its attributes.")
            elif op == "add" or pathless:
                _merge(doc.setdefault(urn, {}), value)
            else:
                doc[urn] = dict(value)
            return
        container = doc.setdefault(urn, {})
    elif path.urn is not None and path.urn.lower() != kind.schema.lower():
        raise invalid_path(f"{path.urn} is not a schema of {kind.name}.")
    assert path.attr is not None
    if path.attr.lower() in res.READ_ONLY:
        if path.filter is not None or path.sub is not None:
            raise mutability(f"{path.attr} is readOnly: it cannot be changed.")
        _read_only(doc, path.attr, op, value)
        return
    attr = kind.attr(path.attr, path.urn)
    if attr is None:
        raise invalid_path(f"{kind.name} has no attribute {path.attr[:64]}.")
    if kind is res.GROUP and attr.name == "members":
        members.append(_member_op(op, path, value))
        return
    sub: str | None = None
    if path.sub is not None:
        found_sub = attr.sub(path.sub)
        if found_sub is None:
            raise invalid_path(f"{attr.name} has no sub-attribute {path.sub[:64]}.")
        sub = found_sub.name
    _drop_other_spellings(container, attr.name)
    if path.filter is not None:
        if not (attr.multi and attr.type == "complex"):
            raise invalid_path(f"{attr.name} is not multi-valued: it takes no value filter.")
        _filtered(kind, container, attr, path.filter, sub, op, value)
    elif sub is not None:
        if attr.multi:
            items = container.get(attr.name) or []
            if op == "remove":
                for item in items:
                    _drop(item, sub)
            elif not items:
                container[attr.name] = [{sub: value}]
            else:
                for item in items:
                    _drop(item, sub)
                    item[sub] = value
        else:
            node = container.get(attr.name)
            if op == "remove":
                if isinstance(node, dict):
                    _drop(node, sub)
            else:
                if not isinstance(node, dict):
                    node = container[attr.name] = {}
                _drop(node, sub)
                node[sub] = value
    elif op == "remove":
        if attr.multi and value is not None:
            wanted = {str(member(v, "value")) for v in (value if isinstance(value, list)
                                                        else [value]) if isinstance(v, Mapping)}
            container[attr.name] = [v for v in container.get(attr.name) or []
                                    if str(member(v, "value")) not in wanted]
        else:
            container.pop(attr.name, None)
    elif attr.multi:
        container[attr.name] = value if isinstance(value, list) else [value]
    elif attr.type == "complex":
        if not isinstance(value, Mapping):
            raise invalid_value(f"{attr.name} takes an object.")
        node = container.get(attr.name)
        if not isinstance(node, dict):
            node = container[attr.name] = {}
        _merge(node, value)
    else:
        container[attr.name] = value


def _drop(node: dict[str, Any], name: str) -> None:
    for key in [k for k in node if k.lower() == name.lower()]:
        del node[key]


def _drop_other_spellings(container: dict[str, Any], name: str) -> None:
    for key in [k for k in container if k.lower() == name.lower() and k != name]:
        container[name] = container.pop(key)


def _equalities(node: Filter) -> dict[str, Any]:
    """What an ``eq`` filter says of the value it selects: the new value made when none
    matches (Entra ID replaces ``emails[type eq "work"].value`` on a user with none)."""
    if isinstance(node, Compare) and node.op == "eq" and node.path.sub is None:
        return {node.path.attr: node.value}
    if isinstance(node, And):
        return {**_equalities(node.left), **_equalities(node.right)}
    return {}


def _filtered(kind: res.Kind, container: dict[str, Any], attr: res.Attr, where: Filter,
              sub: str | None, op: str, value: Any) -> None:
    items = [i for i in container.get(attr.name) or [] if isinstance(i, dict)]

    def case(path: AttrPath) -> bool:
        found = attr.sub(path.attr)
        return found.case_exact if found else False

    for name in _filter_names(where):
        if attr.sub(name) is None:
            raise invalid_path(f"{attr.name} has no sub-attribute {name[:64]}.")
    hit = [i for i in items if matches(where, i, case)]
    if op == "remove":
        if not hit:
            raise no_target(f"No value of {attr.name} matches the path's filter.")
        if sub is None:
            container[attr.name] = [i for i in items if i not in hit]
        else:
            for item in hit:
                _drop(item, sub)
        return
    if not hit:
        made = dict(_equalities(where))
        if sub is not None:
            made[sub] = value
        elif isinstance(value, Mapping):
            made.update(value)
        else:
            raise invalid_value(f"{attr.name} takes an object.")
        container[attr.name] = [*items, made] if kind is not res.USER else [made]
        return
    for item in hit:
        if sub is not None:
            _drop(item, sub)
            item[sub] = value
        elif isinstance(value, Mapping):
            _merge(item, value)
        else:
            raise invalid_value(f"{attr.name} takes an object.")


def _filter_names(node: Filter) -> list[str]:
    from broker.scim.filters import paths

    return [p.attr for p in paths(node)]


def _member_op(op: str, path: PatchPath, value: Any) -> MemberOp:
    if path.sub is not None:
        raise invalid_path("A member's value, type and $ref are immutable: add or remove "
                           "the member instead.")
    if path.filter is not None:
        if op != "remove":
            raise invalid_path("A value filter on members is for remove.")
        for name in _filter_names(path.filter):
            if res.MEMBER_ATTR.sub(name) is None:
                raise invalid_path(f"members has no sub-attribute {name[:64]}.")
        return MemberOp("filter", filter=path.filter)
    if op == "remove":
        if value is None:
            return MemberOp("replace", [])
        return MemberOp("remove", res.member_values(value))
    return MemberOp("add" if op == "add" else "replace", res.member_values(value))
