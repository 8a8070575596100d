"""What Identity Center reads on every portal and CLI request, cached per process — and still
seen to change at once, on every process.

Every request of a signed-in person reads their directory user, their groups, their
assignments, the instance's permission sets and the instance: a dozen store reads that would
cost more than minting the credentials. They are kept in each process's memory, under the
**generation** of the instance's owner account: a random token in the EphemeralStore
(``sso-generation:ACCOUNT``; ``sso-generation:`` alone for the instances themselves, found
by identity store id before their account is known). Every write of an Identity Center
record (``sso_*`` kinds) replaces that token once it is done (``BumpingStore``), and every
cached read first reads the token: an answer cached under another token is read again. So a
user deleted, a membership removed or an assignment deleted on one process is seen by the
next request on every process, for the price of one ephemeral read per cached read.

A token that is missing (expired, or the EphemeralStore restarted empty) is replaced by a new
random one before anything is cached under it, so a token never comes back and no answer
cached under an old one is ever taken for current. Should the replacement after a write
fail (the EphemeralStore down at that very moment: the request then fails with
ServiceUnavailable), an answer is never used longer than ``max_age`` seconds
(``iam.policy_cache_seconds``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from broker.metrics import cache_lookup
from broker.store.base import GLOBAL, Data, EntityStore, EphemeralStore, Record, Ref

T = TypeVar("T")
PREFIX = "sso-generation:"
TTL = 7 * 24 * 3600
INSTANCE_KIND = "sso_instance"
MAX_ENTRIES = 20_000


class Generations:
    def __init__(self, ephemeral: EphemeralStore) -> None:
        self._ephemeral = ephemeral

    async def current(self, account: str) -> str:
        key = PREFIX + account
        found = await self._ephemeral.get(key)
        if found is None:
            await self._ephemeral.put_if_absent(key, secrets.token_hex(16).encode(), TTL)
            found = await self._ephemeral.get(key)
            if found is None:  # gone again at once: nothing may be cached under it
                return secrets.token_hex(16)
        return found.decode()

    async def bump(self, account: str) -> None:
        await self._ephemeral.set(PREFIX + account, secrets.token_hex(16).encode(), TTL)


def _bumps(kind: str) -> bool:
    return kind.startswith("sso_")


class BumpingStore:
    """An EntityStore that, after each write of an Identity Center record, gives its account
    (and for an instance, the instances' own) a new generation."""

    def __init__(self, store: EntityStore, generations: Generations) -> None:
        self._store = store
        self._generations = generations

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _written(self, kind: str, account: str) -> None:
        if _bumps(kind):
            await self._generations.bump(account)
            if kind == INSTANCE_KIND:
                await self._generations.bump(GLOBAL)

    async def create(self, record: Record, *, max_siblings: int | None = None) -> Record:
        try:
            return await self._store.create(record, max_siblings=max_siblings)
        finally:
            await self._written(record.kind, record.account)

    async def update(self, ref: Ref, change: Callable[[Record], Data]) -> Record:
        try:
            return await self._store.update(ref, change)
        finally:
            await self._written(ref.kind, ref.account)

    async def delete(self, ref: Ref, *, blocked_by: tuple[str, ...] = (),
                     check: Callable[[Record], None] | None = None) -> None:
        try:
            await self._store.delete(ref, blocked_by=blocked_by, check=check)
        finally:
            await self._written(ref.kind, ref.account)


class Reads:
    """Answers kept per (account, key) while the account's generation stays the same."""

    def __init__(self, generations: Generations, *, max_age: float) -> None:
        self._generations = generations
        self._max_age = max_age
        self._entries: dict[tuple[str, Hashable], tuple[str, float, Any]] = {}

    async def cached(self, account: str, key: Hashable,
                     load: Callable[[], Awaitable[T]]) -> T:
        if self._max_age <= 0:
            return await load()
        generation = await self._generations.current(account)
        found = self._entries.get((account, key))
        now = time.monotonic()
        if found is not None and found[0] == generation and now - found[1] < self._max_age:
            cache_lookup("identity_center", True)
            value: T = found[2]
            return value
        cache_lookup("identity_center", False)
        value = await load()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[(account, key)] = (generation, now, value)
        return value
