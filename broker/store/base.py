"""The two store protocols: durable entities and short-lived state.

``EntityStore`` keeps every durable entity (accounts, users, access keys, and the kinds later
features add) as a ``Record``: a kind, the account it belongs to, a key unique within that
account and kind, a JSON document, and optionally a parent record and one lookup value unique
across all accounts (an access key id, an account alias). Every backend offers the same few
atomic primitives, so that uniqueness, per-parent quotas ("at most two access keys") and
"delete only when it has no children" hold under concurrent requests in every deployment:

* ``create``: insert; the parent must exist; refuse past a per-parent quota.
* ``update``: read-modify-write of one record, serialised against every other writer.
* ``delete``: remove, refusing while children of named kinds exist.

Records that belong to no account (the accounts themselves) use the account ``GLOBAL`` ("").
Kinds, accounts, keys and lookup values never hold control characters (no database would keep a
NUL byte the same way): every backend refuses to write such a record (ValueError) and finds
nothing under such a name (NotFound).

``EphemeralStore`` keeps short-lived state with a time to live: replay ids, one-time tokens,
sessions, rate-limit counters. Its operations are each atomic across every broker process that
shares the backend.

A value that may be used once and whose record of use lives only in this store (a SAML
assertion id, a TOTP code) is spent with ``spend``: absence there means "not used yet", so a
store that lost its data (a Redis restarted without persistence, flushed, or replaced) would
let every value used before the loss through again. ``spend`` is told since when the value
could have been accepted anywhere (``since``, seconds since the epoch), and answers
``Spent.UNKNOWN`` for a value that could have been spent before the store's data were last
lost: only values that came into being after the loss are spendable, so honest sign-ins
carry on at once with new assertions and codes.

The in-memory backends are the reference; every backend passes the same conformance suite
(tests/conformance).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from broker.errors import StoreUnavailable

Data = Mapping[str, Any]
T = TypeVar("T")
GLOBAL = ""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def storable(*names: str | None) -> bool:
    """True if none of the names holds a control character (see the module docstring)."""
    return not any(n is not None and _CONTROL.search(n) for n in names)


def check_storable(record: Record) -> None:
    parent = record.parent
    if not storable(record.kind, record.account, record.key, record.lookup,
                    parent.kind if parent else None, parent.key if parent else None):
        raise ValueError(f"a record's names must not hold control characters: {record.ref}")


@dataclass(frozen=True)
class Ref:
    """Where a record lives: its kind, its account and its key."""

    kind: str
    account: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.account}/{self.key}"


@dataclass(frozen=True)
class Record:
    kind: str
    account: str
    key: str
    data: Data
    parent: Ref | None = None
    lookup: str | None = None
    version: int = 0

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.account, self.key)


class EntityStore(Protocol):
    async def migrate(self) -> None:
        """Bring the backend's schema up to date. Safe to call from several processes."""
        ...

    async def ping(self) -> None:
        """Return if the backend answers; raise StoreUnavailable otherwise."""
        ...

    async def close(self) -> None: ...

    async def create(self, record: Record, *, max_siblings: int | None = None) -> Record:
        """Insert a new record (version 1).

        Raises AlreadyExists if the key or the lookup value is taken, NotFound if the record
        names a parent that does not exist, and QuotaExceeded if the parent already has
        ``max_siblings`` children of the record's kind.
        """
        ...

    async def get(self, ref: Ref) -> Record:
        """The record, or NotFound."""
        ...

    async def find(self, kind: str, lookup: str) -> Record:
        """The record of that kind whose lookup value is ``lookup``, or NotFound."""
        ...

    async def update(self, ref: Ref, change: Callable[[Record], Data]) -> Record:
        """Replace the record's data with ``change(record)``, atomically; version + 1.

        ``change`` may raise to abort; nothing is written then. NotFound if the record is gone.
        """
        ...

    async def delete(self, ref: Ref, *, blocked_by: tuple[str, ...] = (),
                     check: Callable[[Record], None] | None = None) -> None:
        """Delete the record. Conflict if it has children of any kind in ``blocked_by``;
        children of other kinds are deleted with it. NotFound if it does not exist.
        ``check`` sees the record, locked, first, and may raise to keep it."""
        ...

    async def list(
        self,
        kind: str,
        account: str,
        *,
        parent: Ref | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Records of a kind in an account (and under a parent), ordered by key, keys > after."""
        ...


class Spent(enum.Enum):
    """What ``EphemeralStore.spend`` found."""

    NOW = "now"  # this call spent it: the value's first use
    BEFORE = "before"  # a use is on record: a replay
    UNKNOWN = "unknown"  # it could have been used before the store lost its data


class EphemeralStore(Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store value under key unless a live value is there; True if this call stored it."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Return the live value and delete it, atomically: only one caller ever gets it."""
        ...

    async def spend(self, key: str, ttl: float, since: float) -> Spent:
        """Record a single-use value's use for ``ttl`` seconds, atomically across processes;
        ``since``: the earliest moment (epoch seconds) it could have been accepted."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int:
        """Add one to a counter and return it; a new counter lives ``ttl`` seconds."""
        ...


async def within(seconds: float, work: Coroutine[Any, Any, T], what: str,
                 abandoned: set[asyncio.Task[Any]]) -> T:
    """``work``'s answer if it comes within ``seconds``; else StoreUnavailable at once.

    A store that hangs (a frozen server, a network that drops packets) must cost a caller a
    bounded wait, not its whole request. ``asyncio.wait_for`` would also wait for the
    cancelled work to wind up, and a database driver cancelling a query on a server that
    does not answer takes seconds more (psycopg: up to ten); so the work is cancelled and left
    to finish in the background, held in ``abandoned`` until it has.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    abandoned.add(task)
    task.add_done_callback(functools.partial(_forget, abandoned))
    raise StoreUnavailable(f"{what}: no answer within {seconds:g} s")


def _forget(abandoned: set[asyncio.Task[Any]], task: asyncio.Task[Any]) -> None:
    abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: it was answered as unavailable already
