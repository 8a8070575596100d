"""Managed policies, their versions and attachments, and inline policies.

A managed policy is a record of its own, with up to five versions; users, groups and roles hold
the references (ARN and unique id) of the policies attached to them, and their inline policies,
in their own records, so that attaching, detaching and putting are each one atomic update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from broker.aws import arn as arns
from broker.aws import ids
from broker.aws.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam import aws_managed
from broker.iam.entities import (
    GROUP,
    POLICY,
    ROLE,
    USER,
    Group,
    Inline,
    ManagedPolicy,
    PolicyRef,
    PolicyVersion,
    Principal,
    Role,
    Tag,
    User,
)
from broker.iam.records import (
    Entities,
    Page,
    check_tags,
    missing_group,
    missing_policy,
    missing_role,
    missing_user,
    paginate,
    policy_size,
)
from broker.iam.roles import check_modifiable
from broker.policy.document import PolicyKind, parse
from broker.store.base import Record

MAX_VERSIONS = 5
MAX_ATTACHED = 10
MANAGED_SIZE = 6144
INLINE_SIZE = {USER: 2048, GROUP: 5120, ROLE: 10240}  # all of an entity's inline policies
_QUOTA_NAME = {USER: "PoliciesPerUser", GROUP: "PoliciesPerGroup", ROLE: "PoliciesPerRole"}
_CLASSES: dict[str, type[Principal]] = {USER: User, GROUP: Group, ROLE: Role}
_MISSING = {USER: missing_user, GROUP: missing_group, ROLE: missing_role}

def encoded(document: str) -> str:
    """How IAM returns a policy document: URL-encoded (boto3 and the CLI decode it)."""
    return quote(document, safe="")


class Policies:
    def __init__(self, entities: Entities, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    # -- managed policies -----------------------------------------------------------------------

    async def create(self, account: str, name: str, document: str, *, path: str = "/",
                     description: str | None = None,
                     tags: tuple[Tag, ...] = ()) -> ManagedPolicy:
        check_tags(tags)
        check_managed(document)
        now = self._clock.now()
        policy = ManagedPolicy(
            account_id=account, name=name, path=path,
            policy_id=ids.new_unique_id(ids.POLICY_ID_PREFIX), created=now, updated=now,
            default_version="v1", versions=(PolicyVersion("v1", document, now),),
            description=description, tags=tags,
        )
        try:
            await self._entities.store.create(policy.record())
        except AlreadyExists:
            raise EntityAlreadyExists(
                f"A policy called {name} already exists. Duplicate names are not allowed."
            ) from None
        return policy

    async def get(self, account: str, policy_arn: str) -> ManagedPolicy:
        """A managed policy of this account, or an AWS managed policy, by ARN."""
        if policy_arn in aws_managed.CATALOG:
            return aws_managed.CATALOG[policy_arn]
        name = _local_name(account, policy_arn)
        policy = await self._entities.get(ManagedPolicy, ManagedPolicy.ref(account, name),
                                          lambda: missing_policy(policy_arn))
        if policy.arn != policy_arn:
            raise missing_policy(policy_arn)
        return policy

    async def resolve(self, ref: PolicyRef) -> ManagedPolicy | None:
        """The policy a reference points at, if it still exists as the same policy."""
        if ref.arn in aws_managed.CATALOG:
            found = aws_managed.CATALOG[ref.arn]
            return found if found.policy_id == ref.id else None
        parsed = arns.parse(ref.arn)
        if parsed is None:
            return None
        try:
            policy = await self.get(parsed.account, ref.arn)
        except NoSuchEntity:
            return None
        return policy if policy.policy_id == ref.id else None

    async def listing(self, account: str, *, scope: str = "All", only_attached: bool = False,
                   path_prefix: str = "/", marker: str | None = None,
                   max_items: int | None = None) -> Page:
        found: list[ManagedPolicy] = []
        if scope in ("All", "AWS"):
            found += sorted(aws_managed.CATALOG.values(), key=lambda p: p.name.lower())
        if scope in ("All", "Local"):
            found += await self._entities.all(ManagedPolicy, POLICY, account)
        if only_attached:
            counts = await self.attachment_counts(account)
            found = [p for p in found if counts.get(p.policy_id, 0) > 0]
        found = [p for p in found if p.path.startswith(path_prefix)]
        return paginate(found, lambda p: f"{p.account_id}/{p.name.lower()}", marker, max_items)

    async def delete(self, account: str, policy_arn: str) -> None:
        policy = await self.get(account, policy_arn)
        _local(policy)
        if (await self.attachment_counts(account)).get(policy.policy_id, 0):
            raise DeleteConflict("Cannot delete a policy attached to entities.")

        def still_one_version(record: Record) -> None:
            current = ManagedPolicy.of(record)
            if len(current.versions) > 1:
                raise DeleteConflict(
                    "This policy has more than one version. Before you delete a policy, you "
                    "must delete the policy's versions. The default version is deleted with the "
                    "policy.")

        try:
            await self._entities.store.delete(ManagedPolicy.ref(account, policy.name),
                                              check=still_one_version)
        except NotFound:
            raise missing_policy(policy_arn) from None

    async def create_version(self, account: str, policy_arn: str, document: str,
                             set_default: bool) -> PolicyVersion:
        policy = _local(await self.get(account, policy_arn))
        check_managed(document)
        now = self._clock.now()
        created: list[PolicyVersion] = []

        def add(current: ManagedPolicy) -> ManagedPolicy:
            if len(current.versions) >= MAX_VERSIONS:
                raise LimitExceeded(
                    f"A managed policy can have up to {MAX_VERSIONS} versions. Before you create "
                    "a new version, you must delete an existing version.")
            version = PolicyVersion(f"v{current.next_version}", document, now)
            created.append(version)
            return replace(current, versions=(*current.versions, version),
                           next_version=current.next_version + 1, updated=now,
                           default_version=version.id if set_default
                           else current.default_version)

        await self._change(account, policy, add)
        return created[0]

    async def version(self, account: str, policy_arn: str,
                      version_id: str) -> tuple[ManagedPolicy, PolicyVersion]:
        policy = await self.get(account, policy_arn)
        found = policy.version(version_id)
        if found is None:
            raise NoSuchEntity(
                f"Policy {policy_arn} version {version_id} does not exist or is not attachable.")
        return policy, found

    async def delete_version(self, account: str, policy_arn: str, version_id: str) -> None:
        policy, _ = await self.version(account, policy_arn, version_id)
        _local(policy)

        def drop(current: ManagedPolicy) -> ManagedPolicy:
            if current.default_version == version_id:
                raise DeleteConflict("Cannot delete the default version of a policy.")
            if current.version(version_id) is None:
                raise NoSuchEntity(f"Policy {policy_arn} version {version_id} does not exist "
                                   "or is not attachable.")
            kept = tuple(v for v in current.versions if v.id != version_id)
            return replace(current, versions=kept)

        await self._change(account, policy, drop)

    async def set_default(self, account: str, policy_arn: str, version_id: str) -> None:
        policy, _ = await self.version(account, policy_arn, version_id)
        _local(policy)
        now = self._clock.now()
        await self._change(account, policy,
                           lambda p: replace(p, default_version=version_id, updated=now))

    async def retag(self, account: str, policy_arn: str, add: tuple[Tag, ...] = (),
                    remove: tuple[str, ...] = ()) -> ManagedPolicy:
        policy = _local(await self.get(account, policy_arn))
        return await self._change(account, policy,
                                  lambda p: replace(p, tags=merge_tags(p.tags, add, remove)))

    async def _change(self, account: str, policy: ManagedPolicy,
                      change: Callable[[ManagedPolicy], ManagedPolicy]) -> ManagedPolicy:
        return await self._entities.change(
            ManagedPolicy, ManagedPolicy.ref(account, policy.name), change,
            lambda: missing_policy(policy.arn))

    # -- who uses a policy ----------------------------------------------------------------------

    async def attachment_counts(self, account: str) -> dict[str, int]:
        """How many users, groups and roles of the account each policy id is attached to."""
        return (await self.usage_counts(account))[0]

    async def usage_counts(self, account: str) -> tuple[dict[str, int], dict[str, int]]:
        """By policy id: how many users, groups and roles of the account it is attached to,
        and how many users and roles have it as their permissions boundary."""
        attached: dict[str, int] = {}
        bounding: dict[str, int] = {}
        for entity in await self.principals(account):
            for ref in entity.attached:
                attached[ref.id] = attached.get(ref.id, 0) + 1
            boundary = getattr(entity, "boundary", None)
            if boundary is not None:
                bounding[boundary.id] = bounding.get(boundary.id, 0) + 1
        return attached, bounding

    async def principals(self, account: str) -> list[Principal]:
        found: list[Principal] = []
        for kind, cls in _CLASSES.items():
            found += await self._entities.all(cls, kind, account)
        return found

    async def entities_for(self, account: str,
                           policy_arn: str) -> tuple[list[User], list[Group], list[Role]]:
        policy = await self.get(account, policy_arn)
        users, groups, roles = [], [], []
        for entity in await self.principals(account):
            if any(r.id == policy.policy_id for r in entity.attached):
                if isinstance(entity, User):
                    users.append(entity)
                elif isinstance(entity, Group):
                    groups.append(entity)
                else:
                    roles.append(entity)
        return users, groups, roles

    # -- attachments ----------------------------------------------------------------------------

    async def attach(self, kind: str, account: str, name: str, policy_arn: str) -> None:
        policy = await self.get(account, policy_arn)
        ref = policy.policy_ref

        def add(entity: Principal) -> Principal:
            if any(r.arn == ref.arn for r in entity.attached):
                return entity
            if len(entity.attached) >= MAX_ATTACHED:
                raise LimitExceeded(
                    f"Cannot exceed quota for {_QUOTA_NAME[kind]}: {MAX_ATTACHED}")
            return replace(entity, attached=(*entity.attached, ref))

        await self.change_principal(kind, account, name, add)

    async def detach(self, kind: str, account: str, name: str, policy_arn: str) -> None:
        def drop(entity: Principal) -> Principal:
            if not any(r.arn == policy_arn for r in entity.attached):
                raise NoSuchEntity(f"Policy {policy_arn} was not found.")
            return replace(entity, attached=tuple(r for r in entity.attached
                                                  if r.arn != policy_arn))

        await self.change_principal(kind, account, name, drop)

    async def attached(self, kind: str, account: str, name: str, *, path_prefix: str = "/",
                       marker: str | None = None, max_items: int | None = None) -> Page:
        entity = await self.principal(kind, account, name)
        refs = [r for r in entity.attached if _policy_path(r.arn).startswith(path_prefix)]
        return paginate(refs, lambda r: r.arn, marker, max_items)

    # -- inline policies ------------------------------------------------------------------------

    async def put_inline(self, kind: str, account: str, name: str, policy_name: str,
                         document: str) -> None:
        parse(document, PolicyKind.IDENTITY)

        def put(entity: Principal) -> Principal:
            kept = tuple(p for p in entity.inline if p.name != policy_name)
            updated = (*kept, Inline(policy_name, document))
            limit = INLINE_SIZE[kind]
            if sum(policy_size(p.document) for p in updated) > limit:
                raise LimitExceeded(
                    f"Maximum policy size of {limit} bytes exceeded for {kind} {entity.name}")
            return replace(entity, inline=updated)

        await self.change_principal(kind, account, name, put)

    async def get_inline(self, kind: str, account: str, name: str, policy_name: str) -> Inline:
        entity = await self.principal(kind, account, name)
        for inline in entity.inline:
            if inline.name == policy_name:
                return inline
        raise NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")

    async def delete_inline(self, kind: str, account: str, name: str, policy_name: str) -> None:
        def drop(entity: Principal) -> Principal:
            if not any(p.name == policy_name for p in entity.inline):
                raise NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")
            return replace(entity, inline=tuple(p for p in entity.inline
                                                if p.name != policy_name))

        await self.change_principal(kind, account, name, drop)

    async def inline_names(self, kind: str, account: str, name: str, *,
                           marker: str | None = None, max_items: int | None = None) -> Page:
        entity = await self.principal(kind, account, name)
        names = sorted(p.name for p in entity.inline)
        return paginate(names, lambda n: n, marker, max_items)

    # -- principals -----------------------------------------------------------------------------

    async def principal(self, kind: str, account: str, name: str) -> Principal:
        cls = _CLASSES[kind]
        return await self._entities.get(cls, cls.ref(account, name),
                                        lambda: _MISSING[kind](name))

    async def change_principal(self, kind: str, account: str, name: str,
                               change: Callable[[Any], Any]) -> Principal:
        """Change a user, group or role. A role AWS keeps (roles.RESERVED_PATH) is
        UnmodifiableEntity, its tags too: they would be the principal tags of every session
        of the role (AWS's model lists no such error for TagRole; AWS answers it all the
        same)."""
        cls: type[Any] = _CLASSES[kind]
        if kind == ROLE:
            inner = change

            def change(entity: Any) -> Any:
                return inner(check_modifiable(entity))

        changed: Principal = await self._entities.change(cls, cls.ref(account, name), change,
                                                         lambda: _MISSING[kind](name))
        return changed

    async def reference(self, account: str, policy_arn: str) -> PolicyRef:
        """A reference to a policy that exists (to attach it, or use it as a boundary)."""
        return (await self.get(account, policy_arn)).policy_ref


def check_managed(document: str) -> None:
    parse(document, PolicyKind.IDENTITY)
    if policy_size(document) > MANAGED_SIZE:
        raise LimitExceeded(f"Cannot exceed quota for PolicySize: {MANAGED_SIZE}")


def merge_tags(current: tuple[Tag, ...], add: tuple[Tag, ...],
               remove: tuple[str, ...]) -> tuple[Tag, ...]:
    """TagX / UntagX: new values replace old ones of the same key (regardless of case)."""
    gone = {k.lower() for k in remove} | {t.key.lower() for t in add}
    merged = tuple(t for t in current if t.key.lower() not in gone) + add
    if len(merged) > 50:
        raise LimitExceeded("Cannot exceed quota for TagsPerEntity: 50")
    check_tags(merged)
    return merged


def _local(policy: ManagedPolicy) -> ManagedPolicy:
    if policy.account_id == aws_managed.AWS:
        raise InvalidInput(f"Policy {policy.arn} is an AWS managed policy and cannot be changed.")
    return policy


def _local_name(account: str, policy_arn: str) -> str:
    parsed = arns.parse(policy_arn)
    if (parsed is None or parsed.service != "iam" or parsed.account != account
            or not parsed.resource.startswith("policy/")):
        raise missing_policy(policy_arn)
    return parsed.resource.rsplit("/", 1)[-1]


def _policy_path(policy_arn: str) -> str:
    resource = policy_arn.split(":", 5)[-1]
    return resource[len("policy"):].rsplit("/", 1)[0] + "/"

