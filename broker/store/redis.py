"""Short-lived state in Redis, shared by every broker process that points at the same server.

Each operation is one atomic Redis command (or one Lua script): ``SET NX PX`` for
put-if-absent, ``GETDEL`` for take, and a script for a counter whose time to live starts with
its first increment. Keys carry a prefix so several brokers can share one Redis.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.errors import StoreUnavailable
from broker.metrics import EphemeralCounter

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisEphemeralStore:
    def __init__(self, url: str, *, prefix: str = "broker:", timeout: float = 2.0) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._prefix = prefix
        self._incr = self._client.register_script(_INCR)
        self._count = EphemeralCounter(("ping", "put_if_absent", "take", "get", "set",
                                        "delete", "incr"))

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
