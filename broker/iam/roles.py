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
    LimitExceeded,
    MalformedPolicyDocument,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import ACCOUNT, ROLE, USER, PolicyRef, Role, Tag, name_key
from broker.iam.policies import merge_tags
from broker.iam.records import Entities, Page, check_tags, missing_role, paginate
from broker.policy.document import Policy, PolicyKind, parse
from broker.store.base import GLOBAL, Record, Ref

TRUST_SIZE = 2048


class Roles:
    def __init__(self, entities: Entities, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    async def create(self, account: str, name: str, trust: str, *, path: str = "/",
                     description: str | None = None, max_session: int = 3600,
                     boundary: PolicyRef | None = None, tags: tuple[Tag, ...] = ()) -> Role:
        check_tags(tags)
        await self.check_trust(trust)
        role = Role(account_id=account, name=name, path=path,
                    role_id=ids.new_unique_id(ids.ROLE_ID_PREFIX), created=self._clock.now(),
                    trust=trust, description=description, max_session=max_session,
                    boundary=boundary, tags=tags)
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
        roles = [r for r in await self._entities.all(Role, ROLE, account)
                 if r.path.startswith(path_prefix)]
        return paginate(roles, lambda r: r.name.lower(), marker, max_items)

    async def change(self, account: str, name: str, **fields: object) -> Role:
        return await self._entities.change(Role, Role.ref(account, name),
                                           lambda r: replace(r, **fields),  # type: ignore
                                           lambda: missing_role(name))

    async def retag(self, account: str, name: str, add: tuple[Tag, ...] = (),
                    remove: tuple[str, ...] = ()) -> Role:
        return await self._entities.change(
            Role, Role.ref(account, name),
            lambda r: replace(r, tags=merge_tags(r.tags, add, remove)),
            lambda: missing_role(name))

    async def update_trust(self, account: str, name: str, trust: str) -> Role:
        await self.check_trust(trust)
        return await self.change(account, name, trust=trust)

    async def delete(self, account: str, name: str) -> None:
        def unused(record: Record) -> None:
            current = Role.of(record)
            if current.attached:
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if current.inline:
                raise DeleteConflict("Cannot delete entity, must delete policies first.")

        try:
            await self._entities.store.delete(Role.ref(account, name), check=unused)
        except NotFound:
            raise missing_role(name) from None

    async def check_trust(self, trust: str, *, planned: Collection[str] = ()) -> Policy:
        """A trust policy that can be used: valid, within its quota, naming principals that
        exist (an IAM user or role ARN of an account this broker holds) or are ``planned``
        (ARNs about to be created, by ``broker apply``)."""
        policy = parse(trust, PolicyKind.TRUST)
        if len(trust) > TRUST_SIZE:
            raise LimitExceeded(f"Cannot exceed quota for ACLSizePerRole: {TRUST_SIZE}")
        for statement in policy.statements:
            if statement.principals is None:
                continue
            for principal in statement.principals.arns():
                if principal not in planned and not await self._exists(principal):
                    raise MalformedPolicyDocument(
                        f'Invalid principal in policy: "AWS":"{principal}"')
        return policy

    async def _exists(self, principal: str) -> bool:
        parsed = arns.parse(principal)
        if parsed is None:
            return False
        try:
            await self._entities.store.get(Ref(ACCOUNT, GLOBAL, parsed.account))
        except NotFound:
            return False
        kind, _, rest = parsed.resource.partition("/")
        if parsed.service != "iam" or kind not in ("user", "role"):
            return True  # sessions and federated users are named, not kept
        name = rest.rsplit("/", 1)[-1]
        try:
            record = await self._entities.store.get(
                Ref(USER if kind == "user" else ROLE, parsed.account, name_key(name)))
        except NotFound:
            return False
        path = "/" + rest[: -len(name)] if rest[: -len(name)] else "/"
        return bool(record.data.get("path", "/") == path)
