"""Short-lived state in Redis, shared by every broker process that points at the same server.

Each operation is one atomic Redis command (or one Lua script): ``SET NX PX`` for
put-if-absent, ``GETDEL`` for take, and a script for a counter whose time to live starts with
its first increment. Keys carry a prefix so several brokers can share one Redis.

A Redis that restarts empty (no persistence), is flushed, evicts keys, comes back from an
older snapshot or is replaced by a replica forgets which single-use values were spent
(``spend``: SAML assertion ids, TOTP codes). So one key without a time to live,
``PREFIX + "lost-at"``, holds the moment this prefix's data were last known lost (0: never)
with the server's run_id and eviction count. ``begin`` checks it when the broker starts:
missing, it is written as 0 if the entity store had no record that this prefix was ever used
(a new deployment), else as the start's own moment. ``spend``'s script finds it gone, or
written by another server run, or evictions since, writes the present moment (plus a margin),
and refuses as ``UNKNOWN`` every value that could have been accepted before the recorded
loss. One round trip, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError

from broker.clock import Clock, SystemClock
from broker.errors import ConfigError, StoreUnavailable
from broker.metrics import EphemeralCounter
from broker.store.base import Spent

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


# The lost-at key holds "MOMENT RUN_ID EVICTED": the moment this prefix's data were last known
# lost (0: never), and the Redis server's run_id and evicted_keys count when it was written.
# Data can go without the key going with them: a restart from an older snapshot or AOF, or a
# replica taking over (the key survives, the latest spends do not) — a new run_id; evictions
# (spent keys expire, so they go first) — a larger evicted_keys. Either counts as a loss now.
#
# KEYS: the lost-at key, and the value's key (absent: ``begin`` only). ARGV: the value's time
# to live (ms), since, the broker's now (seconds), whether a missing lost-at key is a loss (1)
# or a new prefix (0), the margin added to a loss's moment (nodes' clocks, a command in
# flight across the loss). Answers 1 (spent now), 0 (spent before), -1 (unknown); ``begin``:
# the moment.
_SPEND = """
local t = redis.call('TIME')
local now = math.max(tonumber(ARGV[3]), tonumber(t[1]) + tonumber(t[2]) / 1000000)
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local evicted = string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)')
if not run or not evicted then
  return redis.error_reply('INFO without run_id or evicted_keys: a loss cannot be told')
end
local record = redis.call('GET', KEYS[1])
local lost, seen_run, seen_evicted
if record then
  lost, seen_run, seen_evicted = string.match(record, '^(%S+) (%S+) (%S+)$')
end
if lost then lost = tonumber(lost) end
if not lost then
  if ARGV[4] == '1' then lost = now + tonumber(ARGV[5]) else lost = 0 end
elseif seen_run ~= run or seen_evicted ~= evicted then
  lost = math.max(lost, now + tonumber(ARGV[5]))
end
local written = string.format('%.17g', lost) .. ' ' .. run .. ' ' .. evicted
if written ~= record then redis.call('SET', KEYS[1], written) end
if #KEYS < 2 then return string.format('%.17g', lost) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
-- Unknown is not recorded: every presentation of such a value is unknown alike (refused, and
-- not a guess), never "spent before".
if tonumber(ARGV[2]) <= lost then return -1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"""
LOST_AT = "lost-at"
log = logging.getLogger("broker.store")
# Added to the moment a loss is noticed: a value accepted on another node just before the loss
# by a clock a little ahead (NTP keeps them within milliseconds) is still counted as before.
LOSS_MARGIN_SECONDS = 2.0
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
        """Check the lost-at key, writing it if it is missing. ``history()``: whether this
        prefix was used before, asked at every start (the entity store's record, made by the
        first call ever, and again if a restored database lacks it): if it was and the key
        is gone, its data were lost. Retried by ``spend`` if the stores are away now."""
        self._history = history
        await self._check_info()
        used_before = await history()
        lost = self._k(LOST_AT)
        if used_before and await self._call(self._client.get(lost), "get") is None:
            # The record may be another node's of this very start: its key comes at once.
            for _ in range(_FIRST_WAITS):
                await asyncio.sleep(0.1)
                if await self._call(self._client.get(lost), "get") is not None:
                    break
        await self._lost_at(lost, used_before)
        self._begun = True

    async def _check_info(self) -> None:
        """The server must tell its run and its evictions (INFO), or a loss goes unseen: a
        Redis-compatible server without them, or a user the ACL denies INFO, stops the
        start with the reason rather than every SAML and MFA request failing later."""
        try:
            server = await self._client.info("server")
            stats = await self._client.info("stats")
        except NoPermissionError:
            raise ConfigError(
                "setting store.ephemeral_url: the broker's Redis user may not run INFO (grant "
                "it +info): without it the broker cannot tell when Redis lost data") from None
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
        missing = [name for name, found in (("run_id", server), ("evicted_keys", stats))
                   if name not in found]
        if missing:
            raise ConfigError(
                f"setting store.ephemeral_url: the Redis server's INFO has no "
                f"{' or '.join(missing)}: without it the broker cannot tell when Redis lost "
                "data (a restart, a failover, evictions)")

    async def _lost_at(self, lost: str, missing_is_loss: bool) -> float:
        return float(await self._call(self._spend(
            keys=[lost], args=[0, 0, repr(self._clock.now().timestamp()),
                               "1" if missing_is_loss else "0", LOSS_MARGIN_SECONDS]), "spend"))

    async def spend(self, key: str, ttl: float, since: float) -> Spent:
        if not self._begun and self._history is not None:
            try:
                await self.begin(self._history)
            except ConfigError as exc:  # found only now: the start could not ask Redis
                log.error("%s", exc)
                raise StoreUnavailable(f"redis: {exc}") from None
        # Without ``begin`` (no runtime: a tool, a test) a missing lost-at key is a loss too:
        # nothing tells a new prefix from an emptied one.
        found = int(await self._call(self._spend(
            keys=[self._k(LOST_AT), self._k(key)],
            args=[_ms(ttl), repr(since), repr(self._clock.now().timestamp()), "1",
                  LOSS_MARGIN_SECONDS]), "spend"))
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
