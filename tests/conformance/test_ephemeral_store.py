"""One conformance suite for every EphemeralStore backend: memory and the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broker.clock import SystemClock
from broker.errors import StoreUnavailable
from broker.store.base import EphemeralStore, Spent
from broker.store.memory import MemoryEphemeralStore
from broker.store.redis import LOSS_MARGIN_SECONDS, RedisEphemeralStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EphemeralStore]:
    backend: EphemeralStore
    if request.param == "memory":
        backend = MemoryEphemeralStore(SystemClock())
    else:
        url = request.getfixturevalue("redis_url")
        redis_backend = RedisEphemeralStore(url, prefix=f"broker-test:{uuid.uuid4().hex}:")
        await redis_backend.begin(await _prefix_used(False))  # as the runtime does at start
        backend = redis_backend
    yield backend
    await backend.close()


async def test_put_if_absent_once(store: EphemeralStore) -> None:
    assert await store.put_if_absent("replay:1", b"a", 5)
    assert not await store.put_if_absent("replay:1", b"b", 5)
    assert await store.get("replay:1") == b"a"


async def test_put_if_absent_under_concurrency(store: EphemeralStore) -> None:
    results = await asyncio.gather(*(store.put_if_absent("race", str(i).encode(), 5)
                                     for i in range(20)))
    assert sum(results) == 1


async def test_take_is_one_time(store: EphemeralStore) -> None:
    await store.set("token", b"t", 5)
    results = await asyncio.gather(*(store.take("token") for _ in range(10)))
    assert [r for r in results if r is not None] == [b"t"]
    assert await store.take("token") is None
    assert await store.get("token") is None


async def test_values_expire(store: EphemeralStore) -> None:
    await store.set("short", b"x", 0.2)
    assert await store.put_if_absent("short2", b"y", 0.2)
    assert await store.get("short") == b"x"
    await asyncio.sleep(0.35)
    assert await store.get("short") is None
    assert await store.take("short2") is None
    assert await store.put_if_absent("short2", b"z", 5)  # free again once expired


async def test_set_overwrites_and_delete_removes(store: EphemeralStore) -> None:
    await store.set("k", b"1", 5)
    await store.set("k", b"2", 5)
    assert await store.get("k") == b"2"
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("never-there")


async def test_counters_count_within_their_window(store: EphemeralStore) -> None:
    counts = await asyncio.gather(*(store.incr("rate:ip", 0.3) for _ in range(10)))
    assert sorted(counts) == list(range(1, 11))
    await asyncio.sleep(0.45)
    assert await store.incr("rate:ip", 0.3) == 1


async def test_nonpositive_ttl_is_a_programming_error(store: EphemeralStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.set("k", b"v", 0)


async def test_binary_values(store: EphemeralStore) -> None:
    value = bytes(range(256))
    await store.set("bin", value, 5)
    assert await store.get("bin") == value


async def test_unreachable_redis_is_unavailable() -> None:
    dead = RedisEphemeralStore("redis://127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await dead.ping()
    with pytest.raises(StoreUnavailable):
        await dead.put_if_absent("k", b"v", 5)
    await dead.close()


async def test_spend_once(store: EphemeralStore) -> None:
    now = time.time()
    assert await store.spend("assertion:1", 5, now) is Spent.NOW
    assert await store.spend("assertion:1", 5, now) is Spent.BEFORE
    assert await store.spend("assertion:2", 5, now) is Spent.NOW  # another value: its own


async def test_spend_under_concurrency(store: EphemeralStore) -> None:
    results = await asyncio.gather(*(store.spend("code", 5, time.time()) for _ in range(20)))
    assert results.count(Spent.NOW) == 1 and results.count(Spent.BEFORE) == 19


# -- Redis that loses its data -------------------------------------------------------------------


async def _prefix_used(used: bool) -> Callable[[], Awaitable[bool]]:
    async def history() -> bool:
        return used
    return history


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisEphemeralStore]:
    backend = RedisEphemeralStore(redis_url, prefix=f"broker-test:{uuid.uuid4().hex}:")
    yield backend
    await backend.close()


async def _lose(store: RedisEphemeralStore, redis_url: str) -> None:
    """What a Redis restarted without persistence (or flushed) does to this prefix's keys."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=store.prefix + "*")]
        assert keys, "nothing to lose"
        await client.delete(*keys)
    finally:
        await client.aclose()


async def test_a_new_prefix_spends_everything(redis_store: RedisEphemeralStore) -> None:
    """A deployment's first start: nothing was ever spent, so nothing is unknown."""
    await redis_store.begin(await _prefix_used(False))
    assert await redis_store.spend("old", 5, time.time() - 3600) is Spent.NOW


async def test_values_from_before_a_loss_while_running_are_unknown(
        redis_store: RedisEphemeralStore, redis_url: str) -> None:
    await redis_store.begin(await _prefix_used(False))
    before = time.time()
    assert await redis_store.spend("assertion", 60, before) is Spent.NOW
    await _lose(redis_store, redis_url)
    # The used value would be NOW again if the loss went unnoticed: it is UNKNOWN, and so
    # on every try (refused each time, never a guess).
    assert await redis_store.spend("assertion", 60, before) is Spent.UNKNOWN
    assert await redis_store.spend("assertion", 60, before) is Spent.UNKNOWN
    # The control: a value that came into being after the loss (and its margin) is
    # spendable, once.
    after = time.time() + LOSS_MARGIN_SECONDS + 1
    assert await redis_store.spend("new", 60, after) is Spent.NOW
    assert await redis_store.spend("new", 60, after) is Spent.BEFORE


async def test_a_start_after_a_loss_refuses_what_came_before(
        redis_store: RedisEphemeralStore) -> None:
    """The prefix was used (the entity store says so) but its lost-at key is gone: its data
    were lost while no broker ran. Values from before the start are unknown, newer ones not."""
    before = time.time() - 1
    await redis_store.begin(await _prefix_used(True))
    assert await redis_store.spend("old", 60, before) is Spent.UNKNOWN
    assert await redis_store.spend("new", 60, time.time() + LOSS_MARGIN_SECONDS + 1) is \
        Spent.NOW


async def test_without_begin_a_missing_lost_at_key_is_a_loss(
        redis_store: RedisEphemeralStore) -> None:
    """A store no runtime began (a tool, a test) cannot tell a new prefix from an emptied one:
    it takes the missing key for a loss rather than write "never lost" for every node."""
    assert await redis_store.spend("old", 60, time.time() - 1) is Spent.UNKNOWN
    assert await redis_store.spend("new", 60, time.time() + LOSS_MARGIN_SECONDS + 1) is \
        Spent.NOW
