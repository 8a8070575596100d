"""The identity store of an Identity Center instance: its users, groups and memberships.

Records live in the instance's owner account, keyed by the identity store id:

* ``sso_user`` ``{store}/{user id}`` and ``sso_group`` ``{store}/{group id}``: children of
  the instance record, so that deleting the instance deletes them, and none is made for an
  instance that is gone. Their data is the entity's attributes under the model's member names
  (``UserName``, ``Name``, ``Emails``, ...) beside who made and changed it and when; the
  record's version is AWS's ``Revision``.
* ``sso_user_name`` / ``sso_group_name`` ``{store}/{digest of the casefolded name}``: the
  claim on a user name or a group's display name (both unique in a store, compared without
  regard to case). Two concurrent requests for one name: the store's key uniqueness lets one
  claim it. A claim names its owner; one whose owner is gone (a deletion interrupted between
  its two writes) is taken over once it is older than ``STALE_CLAIM``.
* ``sso_membership`` ``{store}/{group id}/{user id}``: a child of its user (deleting the user
  deletes its memberships in the same write), looked up by ``{store}/{membership id}``. The
  key makes a user a member of a group once. Deleting a group deletes the group, then its
  memberships; a membership made meanwhile sees its group gone when it checks again after
  writing, and takes itself back.
* ``sso_nesting`` ``{store}/{group id}/{member group id}``: a group that is a member of a
  group (nested groups, which AWS refuses and SCIM allows: see "Nested groups" below), a child
  of the member group, so that deleting a group deletes the edges up from it in the same write;
  the edges down from it are deleted after it, as its memberships.

Nested groups. A user's *effective* groups (``group_ids_of``: what assignments, the portal and
IsMemberInGroups see) are their groups and every group above them. A nesting that would close a
cycle is refused (ValidationException, reason ``GROUP_CYCLE``): the member group may not be the
group or any group above it. Two requests that would close one cycle between them both write,
both look again, both see the cycle and both take their edge back: a cycle never stays.

Ids are AWS's: the store's ten hexadecimal digits, a hyphen and a random UUID. Only the
instance's owner account reaches its store (``instance``); any other store id, another
account's included, is ResourceNotFoundException for the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.aws import arn
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.identitycenter.instances import INSTANCE, KEY, Instance, Instances, SsoError
from broker.store.base import EntityStore, Record, Ref

USER = "sso_user"
GROUP = "sso_group"
MEMBERSHIP = "sso_membership"
NESTING = "sso_nesting"
MAX_EFFECTIVE_GROUPS = 10_000  # groups above one user or group, a bound on one walk
USER_NAME = "sso_user_name"
GROUP_NAME = "sso_group_name"
STALE_CLAIM = timedelta(seconds=60)
RESERVED_NAMES = ("administrator", "awsadministrators")  # AWS's, for users and groups
PAGE = 100  # MaxResults when none is given (the model's largest)


class StoreError(SsoError):
    """An error of the identitystore model, with the members its shape has: RequestId
    (set by the web layer), and for ResourceNotFoundException ResourceType and ResourceId."""

    def __init__(self, code: str, message: str, reason: str | None = None, *,
                 resource_type: str | None = None, resource_id: str | None = None) -> None:
        super().__init__(code, message, reason)
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.request_id: str | None = None

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        extra = {"ResourceType": self.resource_type, "ResourceId": self.resource_id,
                 "RequestId": self.request_id}
        out.update({k: v for k, v in extra.items() if v is not None})
        return out


def invalid(message: str) -> StoreError:
    return StoreError("ValidationException", message)


def missing(resource_type: str, resource_id: str = "") -> StoreError:
    """ResourceNotFoundException; without an id, for what was looked up by another
    identifier (GetUserId, GetGroupId, GetGroupMembershipId)."""
    noun = {"USER": "user", "GROUP": "group", "GROUP_MEMBERSHIP": "group membership",
            "IDENTITY_STORE": "identity store"}[resource_type]
    if not resource_id:
        return StoreError("ResourceNotFoundException",
                          f"No {noun} matches the given identifier.",
                          resource_type=resource_type)
    return StoreError("ResourceNotFoundException",
                      f"The {noun} {resource_id[:100]} does not exist.",
                      resource_type=resource_type, resource_id=resource_id[:100])


def conflict(message: str, reason: str = "UNIQUENESS_CONSTRAINT_VIOLATION") -> StoreError:
    return StoreError("ConflictException", message, reason)


@dataclass(frozen=True)
class Email:
    value: str | None
    type: str | None = None
    primary: bool | None = None


@dataclass(frozen=True)
class DirectoryUser:
    account_id: str  # the instance's owner account
    identity_store_id: str  # d-…
    user_id: str  # the store's ten hexadecimal digits, "-", a UUID
    user_name: str
    display_name: str | None
    given_name: str | None
    family_name: str | None
    emails: tuple[Email, ...]
    status: str  # ENABLED or DISABLED
    revision: int
    created: datetime
    updated: datetime
    attributes_json: str  # every attribute, under the model's member names, as JSON text
    external_ids: tuple[tuple[str, str], ...] = ()  # (issuer, id): SCIM's externalId

    @property
    def active(self) -> bool:
        """Whether the user may sign in and use what they signed in to: every sign-in path
        (the portal, its sessions, sso-oidc's tokens, the portal API) asks this."""
        return self.status != "DISABLED"

    @property
    def primary_email(self) -> str | None:
        for email in self.emails:
            if email.primary:
                return email.value
        return self.emails[0].value if self.emails else None

    @property
    def arn(self) -> str:
        return f"arn:{arn.PARTITION}:identitystore:::user/{self.user_id}"

    def attributes(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.attributes_json)
        return loaded


@dataclass(frozen=True)
class DirectoryGroup:
    account_id: str
    identity_store_id: str
    group_id: str
    display_name: str
    description: str | None
    revision: int
    created: datetime
    updated: datetime
    created_by: str | None
    updated_by: str | None
    external_ids: tuple[tuple[str, str], ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:{arn.PARTITION}:identitystore:::group/{self.group_id}"


@dataclass(frozen=True)
class Membership:
    account_id: str
    identity_store_id: str
    membership_id: str
    group_id: str
    user_id: str
    created: datetime
    created_by: str | None

    @property
    def arn(self) -> str:
        return f"arn:{arn.PARTITION}:identitystore:::membership/{self.membership_id}"


# A change UpdateUser / UpdateGroup asks for: the path under the model's member names
# (("Name", "GivenName"), ("Emails",), ("Extensions", "aws:identitystore:enterprise")), and the
# new value, None to remove the attribute.
Change = tuple[tuple[str, ...], Any]


def _digest(name: str) -> str:
    return hashlib.sha256(name.casefold().encode("utf-8", "surrogatepass")).hexdigest()


def _new_id(store: str) -> str:
    return f"{store.removeprefix('d-')}-{uuid.uuid4()}"


def _meta(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data.get("meta", {}))


def _user(record: Record, store: str) -> DirectoryUser:
    attrs = dict(record.data["attributes"])
    meta = _meta(record.data)
    name = attrs.get("Name") or {}
    return DirectoryUser(
        account_id=record.account, identity_store_id=store,
        user_id=record.key.partition("/")[2], user_name=attrs["UserName"],
        display_name=attrs.get("DisplayName"), given_name=name.get("GivenName"),
        family_name=name.get("FamilyName"),
        emails=tuple(Email(e.get("Value"), e.get("Type"), e.get("Primary"))
                     for e in attrs.get("Emails", [])),
        status=meta.get("status", "ENABLED"), revision=record.version,
        created=datetime.fromisoformat(meta["created"]),
        updated=datetime.fromisoformat(meta["updated"]),
        external_ids=tuple((e["Issuer"], e["Id"]) for e in meta.get("external_ids", [])),
        attributes_json=json.dumps({**attrs, "CreatedBy": meta.get("created_by"),
                                    "UpdatedBy": meta.get("updated_by"),
                                    "ExternalIds": meta.get("external_ids", [])},
                                   sort_keys=True))


def _group(record: Record, store: str) -> DirectoryGroup:
    attrs = record.data["attributes"]
    meta = _meta(record.data)
    return DirectoryGroup(
        account_id=record.account, identity_store_id=store,
        group_id=record.key.partition("/")[2], display_name=attrs["DisplayName"],
        description=attrs.get("Description"), revision=record.version,
        created=datetime.fromisoformat(meta["created"]),
        updated=datetime.fromisoformat(meta["updated"]),
        created_by=meta.get("created_by"), updated_by=meta.get("updated_by"),
        external_ids=tuple((e["Issuer"], e["Id"]) for e in meta.get("external_ids", [])))


def _membership(record: Record, store: str) -> Membership:
    data = record.data
    return Membership(
        account_id=record.account, identity_store_id=store,
        membership_id=data["membership_id"], group_id=data["group_id"],
        user_id=data["user_id"], created=datetime.fromisoformat(data["created"]),
        created_by=data.get("created_by"))


def _meta_of(external_ids: Sequence[tuple[str, str]] | None,
             active: bool | None) -> dict[str, Any]:
    """The record's meta entries for external ids and status (None: not given)."""
    out: dict[str, Any] = {}
    if external_ids is not None:
        out["external_ids"] = [{"Issuer": i, "Id": e} for i, e in external_ids]
    if active is not None:
        out["status"] = "ENABLED" if active else "DISABLED"
    return out


def _cycle(group_id: str, member_group_id: str) -> StoreError:
    return StoreError("ValidationException",
                      f"The group {member_group_id} cannot be a member of the group "
                      f"{group_id}: the group {group_id} is {member_group_id} or a member of "
                      "it, and groups may not form a cycle.", "GROUP_CYCLE")


def _check_revision(record: Record, revision: str | None, noun: str) -> None:
    if revision is not None and str(record.version) != revision:
        raise conflict(f"The {noun} has changed since revision {revision}: it is at "
                       f"revision {record.version}.", "CONCURRENT_MODIFICATION")


def _apply(attrs: dict[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(attrs))
    for path, value in changes:
        node = out
        for step in path[:-1]:
            child = node.get(step)
            if not isinstance(child, dict):
                if value is None:
                    break
                child = node[step] = {}
            node = child
        else:
            if value is None:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    for name in ("Name", "Extensions"):  # an object left empty is no attribute at all
        if out.get(name) == {}:
            del out[name]
    if isinstance(out.get("Extensions"), dict):
        out["Extensions"] = {k: v for k, v in out["Extensions"].items() if v != {}} or None
        if out["Extensions"] is None:
            del out["Extensions"]
    return out


def check_user(attrs: Mapping[str, Any]) -> None:
    """What Identity Center asks of a user beyond the model: a user name, a display name,
    a given and a family name; no reserved name."""
    name = attrs.get("Name") or {}
    for label, present in (("UserName", attrs.get("UserName")),
                           ("DisplayName", attrs.get("DisplayName")),
                           ("Name.GivenName", name.get("GivenName")),
                           ("Name.FamilyName", name.get("FamilyName"))):
        if not present:
            raise invalid(f"{label} is required for a user of IAM Identity Center.")
    if attrs["UserName"].casefold() in RESERVED_NAMES:
        raise invalid(f"The user name {attrs['UserName']} is reserved.")


def check_group(attrs: Mapping[str, Any]) -> None:
    if not attrs.get("DisplayName"):
        raise invalid("DisplayName is required for a group.")
    if attrs["DisplayName"].casefold() in RESERVED_NAMES:
        raise invalid(f"The group name {attrs['DisplayName']} is reserved.")


@dataclass(frozen=True)
class _Kind:
    """Users and groups are stored alike: their kind, the kind of their name claim, the
    attribute that is their unique name, and their resource type in errors."""

    kind: str
    claim: str
    name: str
    resource_type: str
    noun: str


USERS = _Kind(USER, USER_NAME, "UserName", "USER", "user name")
GROUPS = _Kind(GROUP, GROUP_NAME, "DisplayName", "GROUP", "group display name")


class Directory:
    def __init__(self, store: EntityStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._instances = Instances(store, clock)

    # -- the instance -----------------------------------------------------------------------

    async def instance(self, account_id: str, identity_store_id: str) -> Instance:
        """The caller's account's instance whose identity store this is (the id, or its
        ARN); ResourceNotFoundException for any other, another account's included."""
        store = identity_store_id
        owner: str | None = None
        if store.startswith("arn:"):
            head, _, store = store.rpartition("/")
            owner = head.split(":")[4] if head.count(":") >= 5 else ""
        found = await self._instances.of_account(account_id)
        if found is None or found.identity_store_id != store or owner not in (None, account_id):
            raise missing("IDENTITY_STORE", store)
        return found

    # -- what the other parts of Identity Center use ------------------------------------------

    async def user(self, account_id: str, identity_store_id: str,
                   user_id: str) -> DirectoryUser | None:
        try:
            record = await self._store.get(Ref(USER, account_id, f"{identity_store_id}/{user_id}"))
        except NotFound:
            return None
        return _user(record, identity_store_id)

    async def active_user(self, account_id: str, identity_store_id: str,
                          user_id: str) -> DirectoryUser | None:
        """The user, if the directory has them and they are ``active`` (not disabled)."""
        user = await self.user(account_id, identity_store_id, user_id)
        return user if user is not None and user.active else None

    async def user_by_name(self, account_id: str, identity_store_id: str,
                           user_name: str) -> DirectoryUser | None:
        found = await self._claimed(USERS, account_id, identity_store_id, user_name)
        return None if found is None else _user(found, identity_store_id)

    async def group_ids_of(self, account_id: str, identity_store_id: str,
                           user_id: str) -> list[str]:
        """The user's effective groups: their groups and every group above them, sorted."""
        direct = await self.direct_group_ids_of(account_id, identity_store_id, user_id)
        return sorted(await self._above(account_id, identity_store_id, direct))

    async def direct_group_ids_of(self, account_id: str, identity_store_id: str,
                                  user_id: str) -> list[str]:
        found = await self._memberships_of(account_id, identity_store_id, user_id, None, None)
        return [m.group_id for m in found]

    async def parent_group_ids(self, account_id: str, identity_store_id: str,
                               group_id: str) -> list[str]:
        """The groups the group is a direct member of."""
        child = Ref(GROUP, account_id, f"{identity_store_id}/{group_id}")
        records = await self._store.list(NESTING, account_id, parent=child)
        return [r.key.split("/")[1] for r in records]

    async def _above(self, account_id: str, identity_store_id: str,
                     start: Sequence[str]) -> set[str]:
        """``start`` and every group above them, one level at a time (each group once)."""
        seen = set(start)
        level = list(seen)
        while level:
            following: list[str] = []
            for group_id in level:
                for parent in await self.parent_group_ids(account_id, identity_store_id,
                                                          group_id):
                    if parent not in seen:
                        seen.add(parent)
                        following.append(parent)
            if len(seen) > MAX_EFFECTIVE_GROUPS:
                raise invalid(f"More than {MAX_EFFECTIVE_GROUPS} groups are above this "
                              "member.")
            level = following
        return seen

    async def principal_exists(self, account_id: str, identity_store_id: str,
                               principal_type: str, principal_id: str) -> bool:
        kind = {"USER": USER, "GROUP": GROUP}.get(principal_type)
        if kind is None:
            return False
        try:
            await self._store.get(Ref(kind, account_id, f"{identity_store_id}/{principal_id}"))
        except NotFound:
            return False
        return True

    # -- users and groups, as the identitystore API asks for them --------------------------------

    async def create_user(self, instance: Instance, attrs: dict[str, Any], by: str, *,
                          external_ids: Sequence[tuple[str, str]] = (),
                          active: bool = True) -> DirectoryUser:
        """A new user; ``external_ids`` and ``active`` are what SCIM sets (``externalId``,
        ``active``: a user made inactive is DISABLED)."""
        check_user(attrs)
        record = await self._create(USERS, instance, attrs, by, _meta_of(external_ids, active))
        return _user(record, instance.identity_store_id)

    async def describe_user(self, instance: Instance, user_id: str) -> DirectoryUser:
        found = await self.user(instance.account_id, instance.identity_store_id, user_id)
        if found is None:
            raise missing("USER", user_id)
        return found

    async def update_user(self, instance: Instance, user_id: str, changes: Sequence[Change],
                          revision: str | None, by: str, *,
                          external_ids: Sequence[tuple[str, str]] | None = None,
                          active: bool | None = None) -> DirectoryUser:
        """Change a user's attributes, and (None: unchanged) their external ids and whether
        they are active."""
        record = await self._update(USERS, instance, user_id, changes, revision, by,
                                    check_user, _meta_of(external_ids, active))
        return _user(record, instance.identity_store_id)

    async def delete_user(self, instance: Instance, user_id: str, revision: str | None) -> None:
        await self._delete(USERS, instance, user_id, revision)

    async def list_users(self, instance: Instance, *, user_name: str | None,
                         limit: int | None, after: str | None
                         ) -> tuple[list[DirectoryUser], str | None]:
        store = instance.identity_store_id
        if user_name is not None:
            found = await self._claimed(USERS, instance.account_id, store, user_name)
            return ([_user(found, store)] if found else []), None
        records, more = await self._page(USER, instance, after, limit)
        users = [_user(r, store) for r in records]
        return users, users[-1].user_id if more else None

    async def user_id_by(self, instance: Instance, *, path: str | None = None,
                         value: str | None = None,
                         external: tuple[str, str] | None = None) -> str:
        """The id of the user with that unique attribute (``userName``, ``emails.value``) or
        external id."""
        store = instance.identity_store_id
        if path == "userName" and value is not None:
            found = await self._claimed(USERS, instance.account_id, store, value)
            if found is not None:
                return _user(found, store).user_id
        else:
            async for record in self._all(USER, instance):
                user = _user(record, store)
                if external is not None:
                    meta = _meta(record.data)
                    if any((e["Issuer"], e["Id"]) == external
                           for e in meta.get("external_ids", [])):
                        return user.user_id
                elif value is not None and any(
                        (e.value or "").casefold() == value.casefold() for e in user.emails):
                    return user.user_id
        raise missing("USER")

    async def create_group(self, instance: Instance, attrs: dict[str, Any], by: str, *,
                           external_ids: Sequence[tuple[str, str]] = ()) -> DirectoryGroup:
        check_group(attrs)
        record = await self._create(GROUPS, instance, attrs, by,
                                    _meta_of(external_ids, None))
        return _group(record, instance.identity_store_id)

    async def group(self, instance: Instance, group_id: str) -> DirectoryGroup:
        try:
            record = await self._store.get(self._ref(GROUP, instance, group_id))
        except NotFound:
            raise missing("GROUP", group_id) from None
        return _group(record, instance.identity_store_id)

    async def update_group(self, instance: Instance, group_id: str, changes: Sequence[Change],
                           revision: str | None, by: str, *,
                           external_ids: Sequence[tuple[str, str]] | None = None
                           ) -> DirectoryGroup:
        record = await self._update(GROUPS, instance, group_id, changes, revision, by,
                                    check_group, _meta_of(external_ids, None))
        return _group(record, instance.identity_store_id)

    async def delete_group(self, instance: Instance, group_id: str,
                           revision: str | None) -> None:
        await self._delete(GROUPS, instance, group_id, revision)
        # Then its memberships (children of their users) and the groups nested in it
        # (children of those groups): see the module docstring.
        prefix = f"{instance.identity_store_id}/{group_id}/"
        for kind in (MEMBERSHIP, NESTING):
            for record in await self._under(kind, instance, prefix):
                with contextlib.suppress(NotFound):
                    await self._store.delete(record.ref)

    async def list_groups(self, instance: Instance, *, display_name: str | None,
                          limit: int | None, after: str | None
                          ) -> tuple[list[DirectoryGroup], str | None]:
        store = instance.identity_store_id
        if display_name is not None:
            found = await self._claimed(GROUPS, instance.account_id, store, display_name)
            return ([_group(found, store)] if found else []), None
        records, more = await self._page(GROUP, instance, after, limit)
        groups = [_group(r, store) for r in records]
        return groups, groups[-1].group_id if more else None

    async def group_id_by(self, instance: Instance, *, display_name: str | None = None,
                          external: tuple[str, str] | None = None) -> str:
        store = instance.identity_store_id
        if display_name is not None:
            found = await self._claimed(GROUPS, instance.account_id, store, display_name)
            if found is not None:
                return _group(found, store).group_id
        elif external is not None:
            async for record in self._all(GROUP, instance):
                group = _group(record, store)
                if external in group.external_ids:
                    return group.group_id
        raise missing("GROUP")

    # -- memberships ------------------------------------------------------------------------

    async def create_membership(self, instance: Instance, group_id: str, user_id: str,
                                by: str) -> Membership:
        store, account = instance.identity_store_id, instance.account_id
        await self.group(instance, group_id)
        membership_id = _new_id(store)
        now = self._clock.now()
        record = Record(
            kind=MEMBERSHIP, account=account, key=f"{store}/{group_id}/{user_id}",
            parent=self._ref(USER, instance, user_id), lookup=f"{store}/{membership_id}",
            data={"membership_id": membership_id, "group_id": group_id, "user_id": user_id,
                  "created": now.isoformat(), "created_by": by})
        try:
            await self._store.create(record)
        except AlreadyExists:
            raise conflict(f"The user {user_id} is already a member of the group "
                           f"{group_id}.") from None
        except NotFound:
            raise missing("USER", user_id) from None
        try:  # the group deleted meanwhile: take the membership back
            await self._store.get(self._ref(GROUP, instance, group_id))
        except NotFound:
            await self._forget(record.ref)
            raise missing("GROUP", group_id) from None
        return _membership(record, store)

    async def membership(self, instance: Instance, membership_id: str) -> Membership:
        store = instance.identity_store_id
        try:
            record = await self._store.find(MEMBERSHIP, f"{store}/{membership_id}")
        except NotFound:
            raise missing("GROUP_MEMBERSHIP", membership_id) from None
        if record.account != instance.account_id:
            raise missing("GROUP_MEMBERSHIP", membership_id)
        return _membership(record, store)

    async def delete_membership(self, instance: Instance, membership_id: str) -> None:
        found = await self.membership(instance, membership_id)
        ref = Ref(MEMBERSHIP, instance.account_id,
                  f"{found.identity_store_id}/{found.group_id}/{found.user_id}")

        def same(record: Record) -> None:
            if record.data.get("membership_id") != membership_id:
                raise missing("GROUP_MEMBERSHIP", membership_id)

        try:
            await self._store.delete(ref, check=same)
        except NotFound:
            raise missing("GROUP_MEMBERSHIP", membership_id) from None

    async def membership_of(self, instance: Instance, group_id: str,
                            user_id: str) -> Membership | None:
        store = instance.identity_store_id
        try:
            record = await self._store.get(
                Ref(MEMBERSHIP, instance.account_id, f"{store}/{group_id}/{user_id}"))
        except NotFound:
            return None
        return _membership(record, store)

    async def members(self, instance: Instance, group_id: str, limit: int | None,
                      after: str | None) -> tuple[list[Membership], str | None]:
        await self.group(instance, group_id)
        store = instance.identity_store_id
        prefix = f"{store}/{group_id}/"
        size = limit or PAGE
        records = [r for r in await self._store.list(
            MEMBERSHIP, instance.account_id, after=prefix + (after or ""), limit=size + 1)
            if r.key.startswith(prefix)]
        found = [_membership(r, store) for r in records[:size]]
        return found, found[-1].user_id if len(records) > size else None

    async def memberships_of(self, instance: Instance, user_id: str, limit: int | None,
                             after: str | None) -> tuple[list[Membership], str | None]:
        await self.describe_user(instance, user_id)
        size = limit or PAGE
        found = await self._memberships_of(instance.account_id, instance.identity_store_id,
                                           user_id, after, size + 1)
        more = len(found) > size
        found = found[:size]
        return found, found[-1].group_id if more else None

    # -- nested groups ------------------------------------------------------------------------

    async def add_group_member(self, instance: Instance, group_id: str,
                               member_group_id: str, by: str) -> None:
        """Make a group a member of a group; ConflictException when it is one already,
        ValidationException (``GROUP_CYCLE``) when the group is the member or below it."""
        account, store = instance.account_id, instance.identity_store_id
        await self.group(instance, group_id)
        await self.group(instance, member_group_id)
        if member_group_id in await self._above(account, store, [group_id]):
            raise _cycle(group_id, member_group_id)
        record = Record(
            kind=NESTING, account=account, key=f"{store}/{group_id}/{member_group_id}",
            parent=self._ref(GROUP, instance, member_group_id),
            data={"group_id": group_id, "member_group_id": member_group_id,
                  "created": self._clock.now().isoformat(), "created_by": by})
        try:
            await self._store.create(record)
        except AlreadyExists:
            raise conflict(f"The group {member_group_id} is already a member of the group "
                           f"{group_id}.") from None
        except NotFound:
            raise missing("GROUP", member_group_id) from None
        try:  # the group deleted meanwhile: take the edge back
            await self._store.get(self._ref(GROUP, instance, group_id))
        except NotFound:
            await self._forget(record.ref)
            raise missing("GROUP", group_id) from None
        # Another request closing a cycle with this edge at the same time: both see it now.
        if member_group_id in await self._above(account, store, [group_id]):
            await self._forget(record.ref)
            raise _cycle(group_id, member_group_id)

    async def remove_group_member(self, instance: Instance, group_id: str,
                                  member_group_id: str) -> None:
        ref = Ref(NESTING, instance.account_id,
                  f"{instance.identity_store_id}/{group_id}/{member_group_id}")
        try:
            await self._store.delete(ref)
        except NotFound:
            raise missing("GROUP_MEMBERSHIP", f"{group_id}/{member_group_id}") from None

    async def member_groups(self, instance: Instance, group_id: str) -> list[str]:
        """The groups that are direct members of the group."""
        await self.group(instance, group_id)
        found = await self._under(NESTING, instance, f"{instance.identity_store_id}/{group_id}/")
        return [r.key.rpartition("/")[2] for r in found]

    async def is_effective_member(self, instance: Instance, user_id: str,
                                  group_id: str) -> bool:
        """Whether the user is in the group or in a group below it."""
        groups = await self.group_ids_of(instance.account_id, instance.identity_store_id,
                                         user_id)
        return group_id in groups

    # -- the machinery ------------------------------------------------------------------------

    def _ref(self, kind: str, instance: Instance, entity_id: str) -> Ref:
        return Ref(kind, instance.account_id, f"{instance.identity_store_id}/{entity_id}")

    async def _memberships_of(self, account: str, store: str, user_id: str,
                              after_group: str | None, limit: int | None) -> list[Membership]:
        user = Ref(USER, account, f"{store}/{user_id}")
        after = f"{store}/{after_group}/{user_id}" if after_group else None
        records = await self._store.list(MEMBERSHIP, account, parent=user, after=after,
                                         limit=limit)
        return [_membership(r, store) for r in records]

    async def _under(self, kind: str, instance: Instance, prefix: str) -> list[Record]:
        """Every record of the kind in the instance's account whose key starts so."""
        out: list[Record] = []
        after = prefix
        while True:
            found = [r for r in await self._store.list(
                kind, instance.account_id, after=after, limit=PAGE)
                if r.key.startswith(prefix)]
            out.extend(found)
            if len(found) < PAGE:
                return out
            after = found[-1].key

    async def _page(self, kind: str, instance: Instance, after: str | None,
                    limit: int | None) -> tuple[list[Record], bool]:
        prefix = f"{instance.identity_store_id}/"
        size = limit or PAGE
        records = [r for r in await self._store.list(
            kind, instance.account_id, after=prefix + (after or ""), limit=size + 1)
            if r.key.startswith(prefix)]
        return records[:size], len(records) > size

    async def _all(self, kind: str, instance: Instance) -> AsyncIterator[Record]:
        after: str | None = None
        while True:
            records, more = await self._page(kind, instance, after, PAGE)
            for record in records:
                yield record
            if not more:
                return
            after = records[-1].key.partition("/")[2]

    async def _claimed(self, kind: _Kind, account: str, store: str,
                       name: str) -> Record | None:
        """The record of the entity that holds the claim on a name."""
        try:
            claim = await self._store.get(Ref(kind.claim, account, f"{store}/{_digest(name)}"))
            record = await self._store.get(
                Ref(kind.kind, account, f"{store}/{claim.data['owner']}"))
        except NotFound:
            return None
        if str(record.data["attributes"].get(kind.name, "")).casefold() != name.casefold():
            return None  # a claim left behind by a rename that did not finish
        return record

    async def _claim(self, kind: _Kind, instance: Instance, name: str, owner: str) -> Ref:
        """Claim a name for ``owner``; ConflictException when another holds it."""
        ref = Ref(kind.claim, instance.account_id,
                  f"{instance.identity_store_id}/{_digest(name)}")
        now = self._clock.now()
        claim = Record(kind=kind.claim, account=ref.account, key=ref.key,
                       parent=Ref(INSTANCE, instance.account_id, KEY),
                       data={"owner": owner, "claimed": now.isoformat()})
        for _ in range(2):
            try:
                await self._store.create(claim)
                return ref
            except NotFound:
                raise missing("IDENTITY_STORE", instance.identity_store_id) from None
            except AlreadyExists:
                pass
            try:
                held = await self._store.get(ref)
            except NotFound:
                continue
            holder = held.data["owner"]
            if await self._holds(kind, instance, holder, name) or \
                    datetime.fromisoformat(held.data["claimed"]) > now - STALE_CLAIM:
                break

            def stale(record: Record, holder: str = holder) -> None:
                if record.data["owner"] != holder:
                    raise AlreadyExists(str(ref))

            with contextlib.suppress(NotFound, AlreadyExists):
                await self._store.delete(ref, check=stale)
        raise conflict(f"The {kind.noun} {name[:128]} is already in use in this identity "
                       "store.")

    async def _holds(self, kind: _Kind, instance: Instance, owner: str, name: str) -> bool:
        try:
            record = await self._store.get(self._ref(kind.kind, instance, owner))
        except NotFound:
            return False
        return str(record.data["attributes"].get(kind.name, "")).casefold() == name.casefold()

    async def _forget(self, ref: Ref) -> None:
        with contextlib.suppress(NotFound):
            await self._store.delete(ref)

    async def _create(self, kind: _Kind, instance: Instance, attrs: dict[str, Any],
                      by: str, meta: Mapping[str, Any]) -> Record:
        entity_id = _new_id(instance.identity_store_id)
        claim = await self._claim(kind, instance, attrs[kind.name], entity_id)
        now = self._clock.now().isoformat()
        record = Record(
            kind=kind.kind, account=instance.account_id,
            key=f"{instance.identity_store_id}/{entity_id}",
            parent=Ref(INSTANCE, instance.account_id, KEY),
            data={"attributes": attrs, "meta": {
                "created": now, "updated": now, "created_by": by, "updated_by": by,
                "status": "ENABLED", "external_ids": [], **meta}})
        try:
            stored = await self._store.create(record)
            # The instance deleted and made again meanwhile: no user of the old store.
            live = await self._instances.of_account(instance.account_id)
            if live is None or live.identity_store_id != instance.identity_store_id:
                await self._forget(record.ref)
                raise NotFound(str(record.ref))
        except NotFound:
            await self._forget(claim)
            raise missing("IDENTITY_STORE", instance.identity_store_id) from None
        return stored

    async def _update(self, kind: _Kind, instance: Instance, entity_id: str,
                      changes: Sequence[Change], revision: str | None, by: str,
                      check: Callable[[Mapping[str, Any]], None],
                      meta_changes: Mapping[str, Any]) -> Record:
        ref = self._ref(kind.kind, instance, entity_id)
        try:
            current = await self._store.get(ref)
        except NotFound:
            raise missing(kind.resource_type, entity_id) from None
        _check_revision(current, revision, kind.noun.split()[0])
        old = current.data["attributes"][kind.name]
        wanted = _apply(dict(current.data["attributes"]), changes)
        check(wanted)
        new = wanted[kind.name]
        renamed = new.casefold() != old.casefold()
        claim = await self._claim(kind, instance, new, entity_id) if renamed else None

        def change(record: Record) -> dict[str, Any]:
            _check_revision(record, revision, kind.noun.split()[0])
            if record.data["attributes"][kind.name] != old:
                raise conflict(f"The {kind.noun.split()[0]} changed meanwhile; try again.",
                               "CONCURRENT_MODIFICATION")
            attrs = _apply(dict(record.data["attributes"]), changes)
            check(attrs)
            meta = {**_meta(record.data), **meta_changes,
                    "updated": self._clock.now().isoformat(), "updated_by": by}
            return {**record.data, "attributes": attrs, "meta": meta}

        try:
            updated = await self._store.update(ref, change)
        except BaseException as exc:
            if claim is not None:
                await self._forget(claim)
            if isinstance(exc, NotFound):
                raise missing(kind.resource_type, entity_id) from None
            raise
        if renamed:
            await self._release(kind, instance, old, entity_id)
        return updated

    async def _release(self, kind: _Kind, instance: Instance, name: str, owner: str) -> None:
        ref = Ref(kind.claim, instance.account_id,
                  f"{instance.identity_store_id}/{_digest(name)}")

        def ours(record: Record) -> None:
            if record.data["owner"] != owner:
                raise AlreadyExists(str(ref))

        with contextlib.suppress(NotFound, AlreadyExists):
            await self._store.delete(ref, check=ours)

    async def _delete(self, kind: _Kind, instance: Instance, entity_id: str,
                      revision: str | None) -> None:
        ref = self._ref(kind.kind, instance, entity_id)
        names: list[str] = []

        def check(record: Record) -> None:
            _check_revision(record, revision, kind.noun.split()[0])
            names.append(record.data["attributes"][kind.name])

        try:
            await self._store.delete(ref, check=check)
        except NotFound:
            raise missing(kind.resource_type, entity_id) from None
        await self._release(kind, instance, names[0], entity_id)
