"""In-process stores: the reference implementations of both protocols.

``MemoryEntityStore`` keeps nothing across restarts; it is for tests and for reasoning about
the protocol. ``MemoryEphemeralStore`` is the embedded default for short-lived state: correct
for one process (the broker refuses to start several workers on it).
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable
from dataclasses import replace

from broker.clock import Clock
from broker.errors import AlreadyExists, Conflict, NotFound, QuotaExceeded
from broker.store.base import Data, Record, Ref, Spent, check_storable, storable


def _frozen_copy(data: Data) -> Data:
    # A JSON round trip: the same values every backend can hold, and no shared mutable state.
    loaded: Data = json.loads(json.dumps(data, sort_keys=True))
    return loaded


class MemoryEntityStore:
    def __init__(self) -> None:
        self._records: dict[Ref, Record] = {}
        self._lookups: dict[tuple[str, str], Ref] = {}
        self._lock = asyncio.Lock()

    async def migrate(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, record: Record, *, max_siblings: int | None = None) -> Record:
        check_storable(record)
        async with self._lock:
            if record.ref in self._records:
                raise AlreadyExists(str(record.ref))
            if record.lookup is not None and (record.kind, record.lookup) in self._lookups:
                raise AlreadyExists(f"{record.kind} lookup {record.lookup}")
            if record.parent is not None:
                if record.parent.account != record.account:
                    raise ValueError("a record's parent must be in the same account")
                if record.parent not in self._records:
                    raise NotFound(str(record.parent))
                if max_siblings is not None:
                    siblings = self._children(record.parent, record.kind)
                    if len(siblings) >= max_siblings:
                        raise QuotaExceeded(f"{record.parent} has {len(siblings)} {record.kind}")
            stored = replace(record, data=_frozen_copy(record.data), version=1)
            self._records[stored.ref] = stored
            if stored.lookup is not None:
                self._lookups[(stored.kind, stored.lookup)] = stored.ref
            return stored

    async def get(self, ref: Ref) -> Record:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        try:
            return self._records[ref]
        except KeyError:
            raise NotFound(str(ref)) from None

    async def find(self, kind: str, lookup: str) -> Record:
        if not storable(kind, lookup):
            raise NotFound(f"{kind} lookup {lookup!r}")
        ref = self._lookups.get((kind, lookup))
        if ref is None:
            raise NotFound(f"{kind} lookup {lookup}")
        return self._records[ref]

    async def update(self, ref: Ref, change: Callable[[Record], Data]) -> Record:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        async with self._lock:
            current = await self.get(ref)
            updated = replace(
                current, data=_frozen_copy(change(current)), version=current.version + 1
            )
            self._records[ref] = updated
            return updated

    async def delete(self, ref: Ref, *, blocked_by: tuple[str, ...] = (),
                     check: Callable[[Record], None] | None = None) -> None:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        async with self._lock:
            if ref not in self._records:
                raise NotFound(str(ref))
            if check is not None:
                check(self._records[ref])
            for kind in blocked_by:
                if self._children(ref, kind):
                    raise Conflict(f"{ref} still has {kind} records")
            for child in [r for r in self._records.values() if r.parent == ref]:
                self._drop(child)
            self._drop(self._records[ref])

    async def list(
        self,
        kind: str,
        account: str,
        *,
        parent: Ref | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Record]:
        if not storable(kind, account, after, *((parent.kind, parent.key) if parent else ())):
            return []
        found = sorted(
            (
                r
                for r in self._records.values()
                if r.kind == kind
                and r.account == account
                and (parent is None or r.parent == parent)
                and (after is None or r.key > after)
            ),
            key=lambda r: r.key,
        )
        return found if limit is None else found[:limit]

    def _children(self, parent: Ref, kind: str) -> builtins.list[Record]:
        return [r for r in self._records.values() if r.parent == parent and r.kind == kind]

    def _drop(self, record: Record) -> None:
        del self._records[record.ref]
        if record.lookup is not None:
            self._lookups.pop((record.kind, record.lookup), None)


class MemoryEphemeralStore:
    """Short-lived state in this process. Expired entries are dropped as they are met, and
    swept in full every few thousand writes so that an idle key cannot pin memory."""

    _SWEEP_EVERY = 4096

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._writes = 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= self._now():
            del self._values[key]
            return None
        return entry[0]

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            now = self._now()
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        _check_ttl(ttl)
        if self._live(key) is not None:
            return False
        self._values[key] = (bytes(value), self._now() + ttl)
        self._wrote()
        return True

    async def spend(self, key: str, ttl: float, since: float) -> Spent:
        # This store's data live and die with its one process, whose uses it all holds: a
        # restart forgets them with everything else (docs/operations.md says so).
        return Spent.NOW if await self.put_if_absent(key, b"1", ttl) else Spent.BEFORE

    async def take(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is not None:
            del self._values[key]
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        _check_ttl(ttl)
        self._values[key] = (bytes(value), self._now() + ttl)
        self._wrote()

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._counters.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        _check_ttl(ttl)
        now = self._now()
        count, expires = self._counters.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl
        count += 1
        self._counters[key] = (count, expires)
        self._wrote()
        return count


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a time to live must be positive, got {ttl!r}")
