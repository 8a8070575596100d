"""Roles: a trust policy, permissions (attached and inline policies, a boundary), a maximum
session duration and tags."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from broker.aws import arn as arns
from broker.aws import ids
from broker.aws.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    MalformedPolicyDocument,
    UnmodifiableEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import ACCOUNT, ROLE, USER, PolicyRef, Role, Tag, name_key
from broker.iam.records import Entities, Page, check_tags, missing_role, policy_size
from broker.policy.document import PolicyKind, parse
from broker.store.base import GLOBAL, Record, Ref

TRUST_SIZE = 2048
# Roles AWS services keep (IAM Identity Center's AWSReservedSSO_* roles): made and changed by
# the service alone, never by the account's administrators.
RESERVED_PATH = "/aws-reserved/"


def check_modifiable(role: Role) -> Role:
    if role.path.startswith(RESERVED_PATH):
        raise UnmodifiableEntity(
            f"Cannot perform the operation on the protected role '{role.name}' - this role "
            "is only modifiable by AWS")
    return role


class Roles:
    def __init__(self, entities: Entities, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    async def create(self, account: str, name: str, trust: str, *, path: str = "/",
                     description: str | None = None, max_session: int = 3600,
                     boundary: PolicyRef | None = None, tags: tuple[Tag, ...] = ()) -> Role:
        check_tags(tags)
        if path.startswith(RESERVED_PATH):
            raise InvalidInput(f"The path {RESERVED_PATH} is reserved for the roles of AWS "
                               "services.")
        bound = await self.check_trust(trust)
        role = Role(account_id=account, name=name, path=path,
                    role_id=ids.new_unique_id(ids.ROLE_ID_PREFIX), created=self._clock.now(),
                    trust=trust, trust_ids=bound, description=description,
                    max_session=max_session, boundary=boundary, tags=tags)
        try:
            await self._entities.store.create(role.record())
        except AlreadyExists:
            raise EntityAlreadyExists(f"Role with name {name} already exists.") from None
        return role

    async def get(self, account: str, name: str) -> Role:
        return await self._entities.get(Role, Role.ref(account, name),
                                        lambda: missing_role(name))

    async def listing(self, account: str, *, path_prefix: str = "/", marker: str | None = None,
                   max_items: int | None = None) -> Page:
        return await self._entities.page(Role, ROLE, account, marker, max_items,
                                         lambda r: r.path.startswith(path_prefix))

    async def change(self, account: str, name: str, **fields: object) -> Role:
        path = fields.get("path")
        if isinstance(path, str) and path.startswith(RESERVED_PATH):
            raise InvalidInput(f"The path {RESERVED_PATH} is reserved for the roles of AWS "
                               "services.")
        return await self._entities.change(
            Role, Role.ref(account, name),
            lambda r: replace(check_modifiable(r), **fields),  # type: ignore[arg-type]
            lambda: missing_role(name))

    async def update_trust(self, account: str, name: str, trust: str) -> Role:
        bound = await self.check_trust(trust)
        return await self.change(account, name, trust=trust, trust_ids=bound)

    async def delete(self, account: str, name: str) -> None:
        def unused(record: Record) -> None:
            current = check_modifiable(Role.of(record))
            if current.attached:
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if current.inline:
                raise DeleteConflict("Cannot delete entity, must delete policies first.")

        try:
            await self._entities.store.delete(Role.ref(account, name), check=unused)
        except NotFound:
            raise missing_role(name) from None

    async def check_trust(self, trust: str, *, planned: Collection[str] = ()
                          ) -> tuple[tuple[str, str], ...]:
        """A trust policy that can be used: valid, within its quota, naming principals that
        exist (an IAM user or role ARN of an account this broker holds) or are ``planned``
        (ARNs about to be created, by ``broker apply``). Returns each user and role ARN it names
        with that identity's unique id: the trust policy names that identity, not whoever holds
        the name later (as on AWS)."""
        policy = parse(trust, PolicyKind.TRUST)
        if policy_size(trust) > TRUST_SIZE:
            raise LimitExceeded(f"Cannot exceed quota for ACLSizePerRole: {TRUST_SIZE}")
        bound: dict[str, str] = {}
        for statement in policy.statements:
            if statement.principals is None:
                continue
            for principal in statement.principals.arns():
                if principal in planned:
                    continue
                found = await self._resolve(principal)
                if found is None:
                    raise MalformedPolicyDocument(
                        f'Invalid principal in policy: "AWS":"{principal}"')
                if found:
                    bound[principal] = found
        return tuple(sorted(bound.items()))

    async def _resolve(self, principal: str) -> str | None:
        """The unique id of the user or role an ARN names; "" for a principal that is named
        but not kept (a session, a federated user); None for one that cannot be used."""
        parsed = arns.parse(principal)
        if parsed is None:
            return None
        try:
            await self._entities.store.get(Ref(ACCOUNT, GLOBAL, parsed.account))
        except NotFound:
            return None
        kind, _, rest = parsed.resource.partition("/")
        if parsed.service == "sts":
            return "" if kind in ("assumed-role", "federated-user") and rest else None
        if kind not in ("user", "role"):
            return None  # a group, a policy...: not a principal
        name = rest.rsplit("/", 1)[-1]
        try:
            record = await self._entities.store.get(
                Ref(USER if kind == "user" else ROLE, parsed.account, name_key(name)))
        except NotFound:
            return None
        path = "/" + rest[: -len(name)] if rest[: -len(name)] else "/"
        if record.data.get("path", "/") != path or record.lookup is None:
            return None
        return record.lookup
