"""The SCIM resources the server offers — User (with the enterprise extension) and Group —
their schemas as ``/Schemas`` publishes them (RFC 7643 §7), and their mapping to the identity
store's attributes, so that what SCIM writes is what ``identitystore`` reads.

Only what the identity store keeps is published, as AWS's SCIM implementation does: one value
of ``emails``, ``addresses``, ``phoneNumbers`` and ``roles`` each; no ``password``, ``ims``,
``photos``, ``x509Certificates``, ``entitlements`` (accepted and ignored where Okta and Entra
ID send them: ``password``, ``groups`` on a new user, ``display`` of a value). Every value is
checked by the identitystore model's own shapes (``store_api.changes``), so a value SCIM may
write is one UpdateUser may write too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.identitycenter import store_api
from broker.identitycenter.directory import Change, DirectoryGroup, DirectoryUser, StoreError
from broker.scim.errors import invalid_value
from broker.scim.filters import AttrPath, member

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
EXTERNAL_ISSUER = "scim"  # the Issuer of the ExternalIds SCIM's externalId becomes
STORE_ENTERPRISE = store_api.ENTERPRISE


@dataclass(frozen=True)
class Attr:
    """An attribute's definition (RFC 7643 §7)."""

    name: str
    type: str = "string"
    multi: bool = False
    required: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    case_exact: bool = False
    subs: tuple[Attr, ...] = ()
    canonical: tuple[str, ...] = ()
    references: tuple[str, ...] = ()

    def sub(self, name: str) -> Attr | None:
        lowered = name.lower()
        return next((s for s in self.subs if s.name.lower() == lowered), None)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "type": self.type, "multiValued": self.multi,
            "description": self.name, "required": self.required,
            "caseExact": self.case_exact, "mutability": self.mutability,
            "returned": self.returned, "uniqueness": self.uniqueness}
        if self.subs:
            out["subAttributes"] = [s.schema() for s in self.subs]
        if self.canonical:
            out["canonicalValues"] = list(self.canonical)
        if self.references:
            out["referenceTypes"] = list(self.references)
        return out


def _s(name: str, **kw: Any) -> Attr:
    return Attr(name, **kw)


_TYPED = (_s("value"), _s("type"), _s("primary", type="boolean"))
_ID = _s("id", mutability="readOnly", returned="always", uniqueness="server", case_exact=True)
_EXTERNAL = _s("externalId", case_exact=True)

USER_ATTRS: tuple[Attr, ...] = (
    _ID, _EXTERNAL,
    _s("userName", required=True, uniqueness="server"),
    _s("name", type="complex", required=True, subs=(
        _s("formatted"), _s("familyName", required=True), _s("givenName", required=True),
        _s("middleName"), _s("honorificPrefix"), _s("honorificSuffix"))),
    _s("displayName", required=True),
    _s("nickName"), _s("profileUrl", type="reference", references=("external",)),
    _s("title"), _s("userType"), _s("preferredLanguage"), _s("locale"), _s("timezone"),
    _s("active", type="boolean"),
    _s("emails", type="complex", multi=True, subs=_TYPED),
    _s("phoneNumbers", type="complex", multi=True, subs=_TYPED),
    _s("addresses", type="complex", multi=True, subs=(
        _s("formatted"), _s("streetAddress"), _s("locality"), _s("region"),
        _s("postalCode"), _s("country"), _s("type"), _s("primary", type="boolean"))),
    _s("roles", type="complex", multi=True, subs=_TYPED),
)
ENTERPRISE_ATTRS: tuple[Attr, ...] = (
    _s("employeeNumber"), _s("costCenter"), _s("organization"), _s("division"),
    _s("department"), _s("manager", type="complex", subs=(_s("value"),)),
)
MEMBER_ATTR = _s("members", type="complex", multi=True, subs=(
    _s("value", mutability="immutable", case_exact=True),
    _s("$ref", type="reference", mutability="immutable", references=("User", "Group")),
    _s("type", mutability="immutable", canonical=("User", "Group"))))
GROUP_ATTRS: tuple[Attr, ...] = (
    _ID, _EXTERNAL, _s("displayName", required=True, uniqueness="server"), MEMBER_ATTR)
READ_ONLY = frozenset({"id", "meta", "groups", "schemas"})


@dataclass(frozen=True)
class Kind:
    """A resource type: its endpoint, schemas and attributes."""

    name: str
    endpoint: str
    schema: str
    attrs: tuple[Attr, ...]
    extensions: tuple[tuple[str, tuple[Attr, ...]], ...] = ()

    def attr(self, name: str, urn: str | None = None) -> Attr | None:
        pool = self.attrs
        if urn is not None:
            pool = self.extension(urn) or ()
            if not pool and urn.lower() != self.schema.lower():
                return None
            if urn.lower() == self.schema.lower():
                pool = self.attrs
        lowered = name.lower()
        return next((a for a in pool if a.name.lower() == lowered), None)

    def extension(self, urn: str) -> tuple[Attr, ...] | None:
        lowered = urn.lower()
        return next((attrs for u, attrs in self.extensions if u.lower() == lowered), None)

    def extension_urn(self, urn: str) -> str | None:
        lowered = urn.lower()
        return next((u for u, _ in self.extensions if u.lower() == lowered), None)

    def resolve(self, path: AttrPath) -> tuple[Attr, Attr | None]:
        """The definitions a path names; None when the schema has no such attribute."""
        found = self.attr(path.attr, path.urn)
        if found is None:
            raise KeyError(str(path))
        if path.sub is None:
            return found, None
        sub = found.sub(path.sub)
        if sub is None:
            raise KeyError(str(path))
        return found, sub

    def case_exact(self, path: AttrPath) -> bool:
        try:
            top, sub = self.resolve(path)
        except KeyError:
            return False
        return (sub or top).case_exact


USER = Kind("User", "/Users", USER_SCHEMA, USER_ATTRS, ((ENTERPRISE, ENTERPRISE_ATTRS),))
GROUP = Kind("Group", "/Groups", GROUP_SCHEMA, GROUP_ATTRS)
KINDS = {"Users": USER, "Groups": GROUP}


def schema_document(kind_schema: str, name: str, attrs: Sequence[Attr], location: str,
                    description: str) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"], "id": kind_schema,
            "name": name, "description": description,
            "attributes": [a.schema() for a in attrs],
            "meta": {"resourceType": "Schema", "location": location}}


# -- identity store → SCIM --------------------------------------------------------------------

def _stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def version(revision: int) -> str:
    return f'W/"{revision}"'


_USER_SIMPLE = {"DisplayName": "displayName", "NickName": "nickName",
                "ProfileUrl": "profileUrl", "Title": "title", "UserType": "userType",
                "PreferredLanguage": "preferredLanguage", "Locale": "locale",
                "Timezone": "timezone"}
_MULTI = {"Emails": "emails", "PhoneNumbers": "phoneNumbers", "Addresses": "addresses",
          "Roles": "roles"}


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _scim_object(value: Mapping[str, Any]) -> dict[str, Any]:
    return {_lower_first(k): v for k, v in value.items() if v is not None}


def external_id(external_ids: Iterable[Any]) -> str | None:
    for entry in external_ids:
        issuer, ident = (entry["Issuer"], entry["Id"]) if isinstance(entry, Mapping) else entry
        if issuer == EXTERNAL_ISSUER:
            return str(ident)
    return None


def render_user(user: DirectoryUser, base_url: str) -> dict[str, Any]:
    attrs = user.attributes()
    out: dict[str, Any] = {"schemas": [USER_SCHEMA], "id": user.user_id}
    ext = external_id(attrs.get("ExternalIds") or ())
    if ext is not None:
        out["externalId"] = ext
    out["userName"] = attrs["UserName"]
    if attrs.get("Name"):
        out["name"] = _scim_object(attrs["Name"])
    for model_name, scim_name in _USER_SIMPLE.items():
        if attrs.get(model_name) is not None:
            out[scim_name] = attrs[model_name]
    out["active"] = user.active
    for model_name, scim_name in _MULTI.items():
        if attrs.get(model_name):
            out[scim_name] = [_scim_object(v) for v in attrs[model_name]]
    enterprise = (attrs.get("Extensions") or {}).get(STORE_ENTERPRISE)
    if enterprise:
        out["schemas"].append(ENTERPRISE)
        out[ENTERPRISE] = {k: v for k, v in enterprise.items() if v is not None}
    out["meta"] = {"resourceType": "User", "created": _stamp(user.created),
                   "lastModified": _stamp(user.updated),
                   "location": f"{base_url}/Users/{user.user_id}",
                   "version": version(user.revision)}
    return out


def render_group(group: DirectoryGroup, base_url: str,
                 members: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": group.group_id}
    ext = external_id(group.external_ids)
    if ext is not None:
        out["externalId"] = ext
    out["displayName"] = group.display_name
    if members:
        out["members"] = list(members)
    out["meta"] = {"resourceType": "Group", "created": _stamp(group.created),
                   "lastModified": _stamp(group.updated),
                   "location": f"{base_url}/Groups/{group.group_id}",
                   "version": version(group.revision)}
    return out


def member_entry(base_url: str, member_id: str, kind: str) -> dict[str, Any]:
    return {"value": member_id, "$ref": f"{base_url}/{kind}s/{member_id}", "type": kind}


# -- SCIM → identity store --------------------------------------------------------------------

def boolean(value: Any, at: str) -> bool:
    """A SCIM boolean; Entra ID sends "True" and "False" as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_value(f"{at} must be true or false.")


def _text(value: Any, at: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_value(f"{at} must be a string.")
    return value


def _complex_value(attr: Attr, value: Any, at: str) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        raise invalid_value(f"{at} must be an object.")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise invalid_value(f"{at} has a member that is not named.")
        sub = attr.sub(key)
        if sub is None:
            if key.lower() in ("display", "$ref"):  # sent by Okta and Entra ID; not kept
                continue
            raise invalid_value(f"{at} has no sub-attribute {key[:64]}.")
        if item is None or item == "":
            continue
        model_name = sub.name[:1].upper() + sub.name[1:]
        out[model_name] = boolean(item, f"{at}.{sub.name}") if sub.type == "boolean" \
            else _text(item, f"{at}.{sub.name}")
    return out or None


def _operation(path: str, value: Any) -> dict[str, Any]:
    return {"AttributePath": path, "AttributeValue": value}


@dataclass(frozen=True)
class UserInput:
    """A User as the identity store keeps it: the model's attributes, the externalId and
    whether it is active."""

    attrs: dict[str, Any]
    external_id: str | None
    active: bool | None  # None: not given (a new user is active; a replaced one keeps it)


def _store_changes(operations: list[dict[str, Any]]) -> list[Change]:
    try:
        return store_api.changes(operations, user=True)
    except StoreError as exc:
        raise invalid_value(exc.message) from None


def user_input(doc: Mapping[str, Any]) -> UserInput:
    """A User document (POST, PUT, or the result of a PATCH) read: readOnly attributes are
    ignored (RFC 7643 §2.2), unknown ones refused; a missing displayName is the formatted
    name, or the given and family names (Entra ID's documented request has none)."""
    operations: list[dict[str, Any]] = []
    external: str | None = None
    active: bool | None = None
    enterprise: dict[str, Any] = {}
    for key, value in doc.items():
        if not isinstance(key, str):
            raise invalid_value("A member of the User is not named.")
        lowered = key.lower()
        if lowered in READ_ONLY or lowered in ("password",):
            continue
        extension = USER.extension(key)
        if extension is not None:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise invalid_value(f"{key} must be an object.")
            enterprise.update(_enterprise(value))
            continue
        if lowered.startswith("urn:"):
            if lowered == USER_SCHEMA.lower():
                raise invalid_value(f"{key} is not an attribute.")
            continue  # a schema the server does not offer: nothing of it is kept
        attr = USER.attr(key)
        if attr is None:
            raise invalid_value(f"The User has no attribute {key[:64]}.")
        if attr.name == "externalId":
            external = _text(value, "externalId")
        elif attr.name == "active":
            active = None if value is None else boolean(value, "active")
        elif attr.type == "complex" and attr.multi:
            values = [] if value is None else value if isinstance(value, list) else [value]
            kept = [v for v in (_complex_value(attr, v, attr.name) for v in values) if v]
            if len(kept) > 1:
                raise invalid_value(f"{attr.name} holds one value in IAM Identity Center.")
            if kept:
                operations.append(_operation(attr.name, kept))
        elif attr.type == "complex":
            kept_one = None if value is None else _complex_value(attr, value, attr.name)
            if kept_one:
                operations.append(_operation(attr.name, kept_one))
        else:
            text = _text(value, attr.name)
            if text is not None:
                operations.append(_operation(attr.name, text))
    if enterprise:
        operations.append(_operation(STORE_ENTERPRISE, enterprise))
    changes = _store_changes(operations)
    attrs: dict[str, Any] = {}
    for target, new in changes:
        node = attrs
        for step in target[:-1]:
            node = node.setdefault(step, {})
        node[target[-1]] = new
    if not attrs.get("DisplayName"):
        name = attrs.get("Name") or {}
        shown = name.get("Formatted") or " ".join(
            p for p in (name.get("GivenName"), name.get("FamilyName")) if p)
        if shown:
            attrs["DisplayName"] = shown
    return UserInput(attrs, external, active)


def _enterprise(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if str(key).lower() == "schemas":  # scim2-models sends the extension's own
            continue
        attr = next((a for a in ENTERPRISE_ATTRS if a.name.lower() == str(key).lower()), None)
        if attr is None:
            raise invalid_value(f"The enterprise extension has no attribute {str(key)[:64]}.")
        if item is None or item == "":
            continue
        if attr.name == "manager":
            if isinstance(item, list):  # Entra ID's [{"$ref": null, "value": "…"}]
                item = item[0] if item else None
            if isinstance(item, str):
                item = {"value": item}
            manager = _text(member(item, "value"), "manager.value") \
                if isinstance(item, Mapping) else None
            if item is not None and not isinstance(item, Mapping):
                raise invalid_value("manager must be an object with a value.")
            if manager:
                out["manager"] = {"value": manager}
            continue
        text = _text(item, attr.name)
        if text is not None:
            out[attr.name] = text
    return out


def user_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """The changes that turn the stored attributes ``old`` into ``new`` (a whole
    replacement: what ``new`` lacks is removed)."""
    keep = {k for k in old if k not in ("CreatedBy", "UpdatedBy", "ExternalIds")} | set(new)
    return [((key,), new.get(key)) for key in sorted(keep) if old.get(key) != new.get(key)]


@dataclass(frozen=True)
class GroupInput:
    display_name: str | None
    external_id: str | None
    members: list[dict[str, Any]] | None  # None: the document says nothing of members


def group_input(doc: Mapping[str, Any]) -> GroupInput:
    display: str | None = None
    external: str | None = None
    members: list[dict[str, Any]] | None = None
    for key, value in doc.items():
        if not isinstance(key, str):
            raise invalid_value("A member of the Group is not named.")
        lowered = key.lower()
        if lowered in READ_ONLY or lowered.startswith("urn:"):
            continue
        attr = GROUP.attr(key)
        if attr is None:
            raise invalid_value(f"The Group has no attribute {key[:64]}.")
        if attr.name == "displayName":
            display = _text(value, "displayName")
        elif attr.name == "externalId":
            external = _text(value, "externalId")
        else:
            members = member_values(value)
    return GroupInput(display, external, members)


def member_values(value: Any) -> list[dict[str, Any]]:
    """``members`` values: each an object with a ``value`` (an id) and maybe a ``type``."""
    values = [] if value is None else value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if not isinstance(item, Mapping):
            raise invalid_value("Each member is an object with a value.")
        ident = member(item, "value")
        if not isinstance(ident, str) or not ident:
            raise invalid_value("Each member needs a value: the id of a User or a Group.")
        kind = member(item, "type")
        if kind is not None and (not isinstance(kind, str) or
                                 kind.lower() not in ("user", "group")):
            raise invalid_value("A member's type is User or Group.")
        out.append({"value": ident, "type": kind.capitalize() if kind else None})
    return out
