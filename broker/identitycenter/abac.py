"""Attributes for access control (ABAC): which of a directory user's attributes become the
session tags of the roles they open through Identity Center.

An instance has at most one configuration, a record of its owner account (kind
``sso_access_control``, key ``INSTANCE_ID``, a child of the instance record: deleting the
instance deletes it). It lists up to 50 attributes, each a tag key and the source its value
is read from: one of the ``${path:…}`` attribute paths AWS supports (its guide's "Supported
external identity provider attributes"), read from the directory user as identitystore and
SCIM store it — the enterprise extension under ``Extensions["aws:identitystore:enterprise"]``.

The tags of a session (``session_tags``): each configured key whose source has a value for the
user (a value missing in the directory is no tag, as AWS; one no session tag can carry refuses
the session, as STS refuses such a tag), and — when the person signed in
through an external IdP whose assertion carried
``https://aws.amazon.com/SAML/Attributes/AccessControl:{Key}`` — those asserted keys too. A key
both configured and asserted takes the directory's value, as AWS's guide says ("IAM Identity
Center will send the value from its Identity Store"); the asserted value stands only where the
directory has none. Nothing is tagged without a configuration: AWS asks that ABAC be enabled
(a configuration created, even an empty one) before any attribute, asserted ones included, is
passed on. Tags are ordinary session tags, not transitive (see docs/identity-center.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from broker.errors import AlreadyExists, NotFound
from broker.identitycenter.instances import INSTANCE, KEY, Instance, SsoError
from broker.store.base import EntityStore, Record, Ref

ACCESS_CONTROL = "sso_access_control"
MAX_ATTRIBUTES = 50  # the model's AccessControlAttributeList
MAX_SOURCES = 1  # AccessControlAttributeValueSourceList
MAX_TAG_KEY, MAX_TAG_VALUE = 128, 256  # STS's session tag limits
ASSERTED_PREFIX = "https://aws.amazon.com/SAML/Attributes/AccessControl:"
ENTERPRISE = "aws:identitystore:enterprise"

# The models' patterns (AccessControlAttributeKey; STS's tag values).
_KEY = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+")
_TAG_VALUE = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*")

Attrs = Mapping[str, Any]


def _get(*path: str) -> Callable[[Attrs], Any]:
    def read(attrs: Attrs) -> Any:
        node: Any = attrs
        for step in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(step)
        return node
    return read


def _typed(member: str, kind: str, field: str) -> Callable[[Attrs], Any]:
    """The ``field`` of the ``kind`` entry of a multi-valued attribute (``addresses[type eq
    "work"].locality``), compared as SCIM compares types: without regard to case."""
    def read(attrs: Attrs) -> Any:
        entries = attrs.get(member)
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if isinstance(entry, Mapping) and isinstance(entry.get("Type"), str) \
                    and entry["Type"].casefold() == kind:
                return entry.get(field)
        return None
    return read


def _primary(member: str, field: str) -> Callable[[Attrs], Any]:
    def read(attrs: Attrs) -> Any:
        entries = attrs.get(member)
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("Primary") is True:
                return entry.get(field)
        return None
    return read


def _enterprise(*path: str) -> Callable[[Attrs], Any]:
    return _get("Extensions", ENTERPRISE, *path)


# Every source AWS supports, as its guide lists them, and where the directory keeps it.
SOURCES: dict[str, Callable[[Attrs], Any]] = {
    "${path:userName}": _get("UserName"),
    "${path:name.familyName}": _get("Name", "FamilyName"),
    "${path:name.givenName}": _get("Name", "GivenName"),
    "${path:displayName}": _get("DisplayName"),
    "${path:nickName}": _get("NickName"),
    "${path:emails[primary eq true].value}": _primary("Emails", "Value"),
    **{f'${{path:addresses[type eq "work"].{scim}}}': _typed("Addresses", "work", member)
       for scim, member in (("streetAddress", "StreetAddress"), ("locality", "Locality"),
                            ("region", "Region"), ("postalCode", "PostalCode"),
                            ("country", "Country"), ("formatted", "Formatted"))},
    '${path:phoneNumbers[type eq "work"].value}': _typed("PhoneNumbers", "work", "Value"),
    "${path:userType}": _get("UserType"),
    "${path:title}": _get("Title"),
    "${path:locale}": _get("Locale"),
    "${path:timezone}": _get("Timezone"),
    "${path:enterprise.employeeNumber}": _enterprise("employeeNumber"),
    "${path:enterprise.costCenter}": _enterprise("costCenter"),
    "${path:enterprise.organization}": _enterprise("organization"),
    "${path:enterprise.division}": _enterprise("division"),
    "${path:enterprise.department}": _enterprise("department"),
    "${path:enterprise.manager.value}": _enterprise("manager", "value"),
}
# The same sources as a person types them: the names are case-insensitive, as SCIM's are.
_FOLDED = {name.casefold(): name for name in SOURCES}


def invalid(message: str) -> SsoError:
    return SsoError("ValidationException", message)


@dataclass(frozen=True)
class AccessControlAttribute:
    key: str
    source: str  # one of SOURCES, as AWS spells it

    def wire(self) -> dict[str, Any]:
        return {"Key": self.key, "Value": {"Source": [self.source]}}


@dataclass(frozen=True)
class Configuration:
    account_id: str
    instance_id: str
    attributes: tuple[AccessControlAttribute, ...]
    # ENABLED, CREATION_IN_PROGRESS or CREATION_FAILED. A configuration is written whole in
    # one store write, so the broker's is always ENABLED; the others are in the model and
    # documented, never seen here.
    status: str = "ENABLED"
    status_reason: str | None = None

    def record(self) -> Record:
        return Record(kind=ACCESS_CONTROL, account=self.account_id, key=self.instance_id,
                      data={"attributes": [[a.key, a.source] for a in self.attributes],
                            "status": self.status, "status_reason": self.status_reason},
                      parent=Ref(INSTANCE, self.account_id, KEY))

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Status": self.status,
            "InstanceAccessControlAttributeConfiguration": {
                "AccessControlAttributes": [a.wire() for a in self.attributes]}}
        if self.status_reason is not None:
            out["StatusReason"] = self.status_reason
        return out


def _of(record: Record) -> Configuration:
    data = record.data
    return Configuration(
        account_id=record.account, instance_id=record.key,
        attributes=tuple(AccessControlAttribute(k, s) for k, s in data["attributes"]),
        status=data.get("status", "ENABLED"), status_reason=data.get("status_reason"))


def parse_attributes(given: Any) -> tuple[AccessControlAttribute, ...]:
    """``InstanceAccessControlAttributeConfiguration.AccessControlAttributes`` (its shape
    already checked against the model) as attributes: each source one AWS supports, each key
    once (keys compared as session tag keys are: without regard to case)."""
    attributes = []
    seen: set[str] = set()
    for index, item in enumerate(given, start=1):
        key = item["Key"]
        sources = item["Value"]["Source"]
        if not _KEY.fullmatch(key):
            raise invalid(f"The attribute key {key} at position {index} is not valid: it may "
                          "hold letters, numbers, spaces and _.:/=+-@ only.")
        if key.casefold() in seen:
            raise invalid(f"The attribute key {key} is given more than once.")
        seen.add(key.casefold())
        source = _FOLDED.get(sources[0].strip().casefold())
        if source is None:
            raise invalid(f"The attribute source {sources[0]} of key {key} is not supported. "
                          f"Supported sources: {', '.join(SOURCES)}.")
        attributes.append(AccessControlAttribute(key, source))
    return tuple(attributes)


class Untaggable(Exception):
    """An attribute's value (or an asserted key) that no session tag can carry: the session
    is refused, as STS refuses a tag it cannot carry, rather than opened without the tag a
    policy may be counting on (a Deny on ``aws:PrincipalTag/…`` would not see it)."""


def _value(key: str, raw: Any) -> str | None:
    """A directory value as a session tag value: a string (a number or a boolean as its
    text); None (no tag) when missing or empty. Untaggable beyond STS's 256 characters or
    its characters."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    elif isinstance(raw, (int, float)):
        raw = str(raw)
    if not isinstance(raw, str):
        raise Untaggable(f"The attribute for access control {key} has no single text value.")
    if not raw:
        return None
    if len(raw) > MAX_TAG_VALUE:
        raise Untaggable(f"The value of the attribute for access control {key} is longer "
                         f"than a session tag's {MAX_TAG_VALUE} characters.")
    if not _TAG_VALUE.fullmatch(raw):
        raise Untaggable(f"The value of the attribute for access control {key} has "
                         "characters a session tag cannot hold (letters, numbers, spaces "
                         "and _.:/=+-@ only).")
    return raw


def session_tags(configuration: Configuration | None, attributes: Attrs,
                 asserted: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The session tags of a directory user (``attributes``: the user's stored attributes)
    under ``configuration``; ``asserted``: AccessControl key → value from the external IdP's
    assertion, if the person signed in through one. No configuration, no tags; a value
    missing, no tag. Untaggable for a value or an asserted key no session tag can carry, or
    more than STS's 50 tags in all."""
    if configuration is None:
        return ()
    out: dict[str, tuple[str, str]] = {}
    for attribute in configuration.attributes:
        value = _value(attribute.key, SOURCES[attribute.source](attributes))
        if value is not None:
            out[attribute.key.casefold()] = (attribute.key, value)
    for key, raw in (asserted or {}).items():
        folded = key.casefold()
        if folded in out:
            continue  # the directory's value wins, as AWS's
        if not (0 < len(key) <= MAX_TAG_KEY and _KEY.fullmatch(key)):
            raise Untaggable(f"The asserted attribute for access control {key[:MAX_TAG_KEY]} "
                             "is not a session tag key.")
        value = _value(key, raw)
        if value is not None:
            out[folded] = (key, value)
    if len(out) > MAX_ATTRIBUTES:
        raise Untaggable(f"The attributes for access control make {len(out)} session tags; "
                         f"a session has at most {MAX_ATTRIBUTES}.")
    return tuple(out.values())


class AccessControl:
    """The configurations, as the sso-admin actions read and write them."""

    def __init__(self, store: EntityStore) -> None:
        self._store = store

    def _ref(self, instance: Instance) -> Ref:
        return Ref(ACCESS_CONTROL, instance.account_id, instance.instance_id)

    async def of(self, instance: Instance) -> Configuration | None:
        try:
            return _of(await self._store.get(self._ref(instance)))
        except NotFound:
            return None

    async def create(self, instance: Instance,
                     attributes: Sequence[AccessControlAttribute]) -> Configuration:
        configuration = Configuration(instance.account_id, instance.instance_id,
                                      tuple(attributes))
        try:
            await self._store.create(configuration.record())
        except AlreadyExists:
            raise SsoError("ConflictException",
                           "An attribute-based access control configuration already exists "
                           f"for the instance {instance.arn}. Update it instead.") from None
        return configuration

    async def describe(self, instance: Instance) -> Configuration:
        found = await self.of(instance)
        if found is None:
            raise _missing(instance)
        return found

    async def update(self, instance: Instance,
                     attributes: Sequence[AccessControlAttribute]) -> None:
        def change(record: Record) -> dict[str, Any]:
            return {**record.data, "attributes": [[a.key, a.source] for a in attributes]}
        try:
            await self._store.update(self._ref(instance), change)
        except NotFound:
            raise _missing(instance) from None

    async def delete(self, instance: Instance) -> None:
        try:
            await self._store.delete(self._ref(instance))
        except NotFound:
            raise _missing(instance) from None


def _missing(instance: Instance) -> SsoError:
    return SsoError("ResourceNotFoundException",
                    "No attribute-based access control configuration exists for the instance "
                    f"{instance.arn}.")
