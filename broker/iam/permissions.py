"""What IAM says a principal may do: the compiled policies of users, groups and roles.

``Permissions`` builds the identity side of a principal — its inline policies, the managed
policies attached to it (and, for a user, to its groups), its permissions boundary, its tags —
compiled once and kept for a few seconds. Every broker process sees a change within
``iam.policy_cache_seconds``; the process that made the change sees it at once (the store tells
it, see ``WatchedStore``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from broker.aws.errors import NoSuchEntity
from broker.iam.entities import GROUP, ROLE, USER, Group, PolicyRef, Role, Tag, User
from broker.iam.policies import Policies
from broker.iam.records import Entities
from broker.metrics import cache_lookup
from broker.policy.document import Policy, PolicyKind, parse
from broker.store.base import Data, EntityStore, Record, Ref

T = TypeVar("T")


@dataclass(frozen=True)
class IdentitySide:
    """The identity-based side of a principal."""

    policies: tuple[Policy, ...] = ()
    boundary: Policy | None = None
    tags: tuple[Tag, ...] = ()
    exists: bool = True  # False: the user or role is gone (or is another one by now)


NOBODY = IdentitySide(exists=False)


class WatchedStore:
    """An EntityStore that counts its own writes, so caches in this process can tell.

    The count goes up when a write starts and again when it has ended (committed or not): an
    answer built while a write was under way carries the count from before its end, so it is
    stale as soon as the write is done, never kept as if it were fresh.
    """

    def __init__(self, store: EntityStore) -> None:
        self._store = store
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create(self, record: Record, *, max_siblings: int | None = None) -> Record:
        self.writes += 1
        try:
            return await self._store.create(record, max_siblings=max_siblings)
        finally:
            self.writes += 1

    async def update(self, ref: Ref, change: Callable[[Record], Data]) -> Record:
        self.writes += 1
        try:
            return await self._store.update(ref, change)
        finally:
            self.writes += 1

    async def delete(self, ref: Ref, *, blocked_by: tuple[str, ...] = (),
                     check: Callable[[Record], None] | None = None) -> None:
        self.writes += 1
        try:
            await self._store.delete(ref, blocked_by=blocked_by, check=check)
        finally:
            self.writes += 1


class Permissions:
    def __init__(self, entities: Entities, policies: Policies, *, cache_seconds: float,
                 writes: Callable[[], int]) -> None:
        self._entities = entities
        self._policies = policies
        self._ttl = cache_seconds
        self._writes = writes
        self._cache: dict[tuple[str, ...], tuple[float, int, Any]] = {}
        self._untrusted: dict[tuple[str, ...], tuple[float, int, Any]] = {}
        # Reads under way: when each began (monotonic) and its future.
        self._building: dict[tuple[bool, int, tuple[str, ...]],
                             tuple[float, asyncio.Future[Any]]] = {}
        self._compiled: dict[tuple[str, PolicyKind, str, tuple[tuple[str, str], ...]],
                             Policy] = {}

    async def of_user(self, account: str, user_id: str) -> IdentitySide:
        return await self.cached(("user", user_id), lambda: self._user(account, user_id))

    async def of_role(self, account: str, role_name: str, role_id: str) -> IdentitySide:
        return await self.cached(("role", role_id),
                                  lambda: self._role(account, role_name, role_id))

    async def of_group(self, group: Group) -> IdentitySide:
        return IdentitySide(await self._policies_of(group, f"group/{group.name}"))

    async def managed(self, ref: PolicyRef, kind: PolicyKind = PolicyKind.IDENTITY
                      ) -> Policy | None:
        policy = await self._policies.resolve(ref)
        if policy is None:
            return None
        return self._compile(policy.document, kind, ref.arn)

    async def managed_by_arn(self, account: str, arn: str,
                             kind: PolicyKind = PolicyKind.IDENTITY) -> Policy | None:
        try:
            policy = await self._policies.get(account, arn)
        except NoSuchEntity:
            return None
        return self._compile(policy.document, kind, arn)

    def compile(self, document: str, kind: PolicyKind, name: str) -> Policy:
        return self._compile(document, kind, name)

    def trust_of(self, role: Role) -> Policy:
        """The role's trust policy, compiled, its principals bound to the unique ids they had
        when it was saved."""
        return self._compile(role.trust, PolicyKind.TRUST, role.arn, role.trust_ids)

    # -- building -------------------------------------------------------------------------------

    async def _user(self, account: str, user_id: str) -> IdentitySide:
        user = await self._entities.find(User, USER, user_id)
        if user is None or user.account_id != account:
            return NOBODY
        policies = list(await self._policies_of(user, f"user/{user.name}"))
        for group_id in user.groups:
            group = await self._entities.find(Group, GROUP, group_id)
            if group is not None and group.account_id == account:
                policies += await self._policies_of(group, f"group/{group.name}")
        boundary = await self._boundary(user.boundary)
        return IdentitySide(tuple(policies), boundary, user.tags)

    async def _role(self, account: str, role_name: str, role_id: str) -> IdentitySide:
        role = await self._entities.find(Role, ROLE, role_id)
        if role is None or role.account_id != account or role.name.lower() != role_name.lower():
            return NOBODY
        policies = await self._policies_of(role, f"role/{role.name}")
        return IdentitySide(policies, await self._boundary(role.boundary), role.tags)

    async def _policies_of(self, entity: User | Group | Role, label: str) -> tuple[Policy, ...]:
        found = [self._compile(p.document, PolicyKind.IDENTITY, f"{label}/inline/{p.name}")
                 for p in entity.inline]
        for ref in entity.attached:
            managed = await self.managed(ref)
            if managed is not None:
                found.append(managed)
        return tuple(found)

    async def _boundary(self, ref: PolicyRef | None) -> Policy | None:
        if ref is None:
            return None
        policy = await self.managed(ref, PolicyKind.BOUNDARY)
        if policy is None:
            # A boundary that no longer exists allows nothing: fail closed.
            return self._compile('{"Version":"2012-10-17","Statement":[{"Effect":"Deny",'
                                 '"Action":"*","Resource":"*"}]}', PolicyKind.BOUNDARY, ref.arn)
        return policy

    def _compile(self, document: str, kind: PolicyKind, name: str,
                 bound: tuple[tuple[str, str], ...] = ()) -> Policy:
        # Keyed by the document itself: Python keeps a string's hash, so a role's trust policy,
        # looked up on every AssumeRole*, costs one dictionary probe (no digest, no repr).
        key = (document, kind, name, bound)
        policy = self._compiled.get(key)
        if policy is None:
            policy = parse(document, kind, name=name).bind(bound)
            if len(self._compiled) > 4096:
                self._compiled.clear()
            self._compiled[key] = policy
        return policy

    async def cached(self, key: tuple[str, ...], build: Callable[[], Awaitable[T]], *,
                     untrusted: bool = False) -> T:
        """``build()``'s value, kept for ``iam.policy_cache_seconds`` and until this process
        next writes to the store. What ``build`` raises is not kept.

        ``untrusted``: the key comes from an unauthenticated request (an identity provider
        named by a token or an assertion nobody has verified yet). Such answers are kept apart,
        in a smaller cache of their own, so that a flood of made-up names can never push out
        the answers signed requests depend on."""
        cache = self._untrusted if untrusted else self._cache
        now = time.monotonic()
        writes = self._writes()
        entry = cache.get(key)
        if entry is not None and entry[0] > now and entry[1] == writes:
            cache_lookup("iam_untrusted" if untrusted else "iam", True)
            value: T = entry[2]
            return value
        cache_lookup("iam_untrusted" if untrusted else "iam", False)
        # One build per key at a time: when an answer expires under load, the requests that
        # find it expired together wait for one read of the store instead of each making
        # their own. A read under way is joined only as a kept answer would be used: begun
        # since this process's last write (the key holds the write count) and less than
        # policy_cache_seconds ago — never when that is 0, so a revocation elsewhere is seen
        # as soon as the setting promises, however slow the read.
        flight = (untrusted, writes, key)
        running = self._building.get(flight)
        if running is not None and running[0] + self._ttl > now:
            shared = running[1]
        else:
            shared = asyncio.ensure_future(self._build(cache, key, build, now, writes,
                                                       untrusted))
            self._building[flight] = (now, shared)
            shared.add_done_callback(functools.partial(self._built, flight))
        # Shielded: a caller that gives up does not cancel the others' answer.
        result: T = await asyncio.shield(shared)
        return result

    async def _build(self, cache: dict[tuple[str, ...], tuple[float, int, Any]],
                     key: tuple[str, ...], build: Callable[[], Awaitable[T]], now: float,
                     writes: int, untrusted: bool) -> T:
        value = await build()
        if len(cache) > (1024 if untrusted else 4096):
            cache.clear()
        cache[key] = (now + self._ttl, writes, value)
        return value

    def _built(self, flight: tuple[bool, int, tuple[str, ...]], done: asyncio.Future[Any]) -> None:
        running = self._building.get(flight)
        if running is not None and running[1] is done:
            del self._building[flight]
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody waited for is not logged as lost

