"""Short-lived state in Redis, shared by every broker process that points at the same server.

Each operation is one atomic Redis command (or one Lua script): ``SET NX PX`` for
put-if-absent, ``GETDEL`` for take, and a script for a counter whose time to live starts with
its first increment. Keys carry a prefix so several brokers can share one Redis.

A Redis that restarts empty (no persistence), is flushed, evicts keys or is replaced forgets
which single-use values were spent (``spend``: SAML assertion ids, TOTP codes). So one key
without a time to live, ``PREFIX + "lost-at"``, holds the moment this prefix's data were last
known lost (0: never). ``begin`` writes it when the broker starts: 0 if the entity store has
no record that this prefix was ever used (a new deployment), else the start's own moment
(its data are gone, or Redis would still hold the key). ``spend``'s script finds the key gone
while the broker runs (lost since), writes the present moment, and refuses as ``UNKNOWN``
every value that could have been accepted before the recorded loss. One round trip, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.clock import Clock, SystemClock
from broker.errors import StoreUnavailable
from broker.metrics import EphemeralCounter
from broker.store.base import Spent

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


# KEYS: the lost-at key, the value's key. ARGV: time to live (ms), since, now (seconds),
# whether a missing lost-at key means a loss (1: ``begin`` ran) or a new prefix (0).
_SPEND = """
local lost = redis.call('GET', KEYS[1])
if not lost then
  lost = (ARGV[4] == '1') and ARGV[3] or '0'
  redis.call('SET', KEYS[1], lost, 'NX')
  lost = redis.call('GET', KEYS[1])
end
if redis.call('SET', KEYS[2], '1', 'PX', ARGV[1], 'NX') then
  if tonumber(ARGV[2]) <= tonumber(lost) then return -1 end
  return 1
end
return 0
"""
LOST_AT = "lost-at"
# A node that finds the entity store's record of this prefix just made by another node (the
# deployment's nodes starting together) waits this long for that node's lost-at key.
_FIRST_WAITS = 20  # of 0.1 s


class RedisEphemeralStore:
    def __init__(self, url: str, *, prefix: str = "broker:", timeout: float = 2.0,
                 clock: Clock | None = None) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._prefix = prefix
        self._incr = self._client.register_script(_INCR)
        self._spend = self._client.register_script(_SPEND)
        self._clock = clock or SystemClock()
        self._history: Callable[[], Awaitable[bool]] | None = None
        self._begun = False
        self._count = EphemeralCounter(("ping", "put_if_absent", "take", "get", "set",
                                        "delete", "incr", "spend"))

    @property
    def prefix(self) -> str:
        return self._prefix

    async def begin(self, history: Callable[[], Awaitable[bool]]) -> None:
        """Write the lost-at key unless it is there. ``history()``: whether this prefix was
        used before (the entity store's record, made by the first call ever): if it was and
        the key is gone, its data were lost. Retried by ``spend`` if the stores are away."""
        self._history = history
        lost = self._k(LOST_AT)
        if await self._call(self._client.get(lost), "get") is None:
            used_before = await history()
            if used_before:
                # The record may be another node's of this very start: its key comes at once.
                for _ in range(_FIRST_WAITS):
                    await asyncio.sleep(0.1)
                    if await self._call(self._client.get(lost), "get") is not None:
                        break
            moment = repr(self._clock.now().timestamp()) if used_before else "0"
            await self._call(self._client.set(lost, moment, nx=True), "set")
        self._begun = True

    async def spend(self, key: str, ttl: float, since: float) -> Spent:
        if not self._begun and self._history is not None:
            await self.begin(self._history)
        found = int(await self._call(self._spend(
            keys=[self._k(LOST_AT), self._k(key)],
            args=[_ms(ttl), repr(since), repr(self._clock.now().timestamp()),
                  "1" if self._begun else "0"]), "spend"))
        return {1: Spent.NOW, 0: Spent.BEFORE}.get(found, Spent.UNKNOWN)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, coro: Any, operation: str) -> Any:
        self._count.trip(operation)
        try:
            return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            self._count.error(operation)
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc

    async def ping(self) -> None:
        await self._call(self._client.ping(), "ping")

    async def close(self) -> None:
        await self._client.aclose()

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        stored = await self._call(self._client.set(self._k(key), value, px=_ms(ttl), nx=True),
                                  "put_if_absent")
        return bool(stored)

    async def take(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(self._client.getdel(self._k(key)), "take")
        return value

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(self._client.get(self._k(key)), "get")
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._call(self._client.set(self._k(key), value, px=_ms(ttl)), "set")

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete(self._k(key)), "delete")

    async def incr(self, key: str, ttl: float) -> int:
        return int(await self._call(self._incr(keys=[self._k(key)], args=[_ms(ttl)]),
                                    "incr"))


def _ms(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError(f"a time to live must be positive, got {ttl!r}")
    return max(1, int(ttl * 1000))
