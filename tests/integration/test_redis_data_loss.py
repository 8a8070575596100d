"""A Redis that loses part of its data while the lost-at key survives (store/redis.py): a
restart from an older snapshot, and evictions. In both a used value would be "unused" again;
the broker's ``spend`` tells, and refuses what could have been spent before, while values
that came into being after the loss are spendable (the control of each)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from broker.errors import ConfigError
from broker.store.base import Spent
from broker.store.redis import LOSS_MARGIN_SECONDS, RedisEphemeralStore
from tests.cluster import OwnRedis


async def _first_use() -> bool:
    return False


def _store(server: OwnRedis) -> RedisEphemeralStore:
    return RedisEphemeralStore(server.url, prefix="loss-test:")


async def _begun(server: OwnRedis) -> RedisEphemeralStore:
    store = _store(server)
    await store.begin(_first_use)
    return store


@pytest.fixture
def snapshotting(tmp_path: Path) -> Iterator[OwnRedis]:
    # Snapshots on request only (SAVE): what a crash between two snapshots loses.
    server = OwnRedis(tmp_path / "snapshot", "--dbfilename", "dump.rdb")
    yield server
    server.stop()


def test_a_restart_from_an_older_snapshot_is_a_loss(snapshotting: OwnRedis) -> None:
    async def before_the_crash() -> float:
        store = await _begun(snapshotting)
        try:
            redis.Redis(port=snapshotting.port).save()  # lost-at is in the snapshot
            used = time.time()
            assert await store.spend("assertion", 300, used) is Spent.NOW
            return used
        finally:
            await store.close()

    used = asyncio.run(before_the_crash())
    snapshotting.kill()  # the spend was after the snapshot: gone
    snapshotting.start()
    assert redis.Redis(port=snapshotting.port).get("loss-test:lost-at") is not None

    async def after() -> tuple[Spent, Spent]:
        store = await _begun(snapshotting)
        try:
            replay = await store.spend("assertion", 300, used)
            fresh = await store.spend("new", 300, time.time() + LOSS_MARGIN_SECONDS + 1)
            return replay, fresh
        finally:
            await store.close()

    assert asyncio.run(after()) == (Spent.UNKNOWN, Spent.NOW)


@pytest.fixture
def evicting(tmp_path: Path) -> Iterator[OwnRedis]:
    # volatile-lru (ElastiCache's default): only keys with a time to live are evicted, so the
    # spent values go and the lost-at key, which has none, stays.
    server = OwnRedis(tmp_path / "evicting", "--maxmemory", "4mb",
                      "--maxmemory-policy", "volatile-lru")
    yield server
    server.stop()


def test_evictions_are_a_loss(evicting: OwnRedis) -> None:
    async def run() -> tuple[Spent, Spent, Spent]:
        store = await _begun(evicting)
        try:
            used = time.time()
            assert await store.spend("assertion", 300, used) is Spent.NOW
            # The control before any eviction: a replay is on record.
            before = await store.spend("assertion", 300, used)
            client = redis.Redis(port=evicting.port)
            filler = b"x" * 1000
            n = 0
            while int(client.info("stats")["evicted_keys"]) == 0:
                try:
                    client.set(f"filler:{n}", filler)  # no time to live: never evicted
                except redis.exceptions.OutOfMemoryError:
                    break  # evicting the one volatile key did not make room for this one
                n += 1
            assert int(client.info("stats")["evicted_keys"]) >= 1
            assert client.exists("loss-test:assertion") == 0  # the spent value went
            client.delete(*[f"filler:{i}" for i in range(n)])  # room again
            replay = await store.spend("assertion", 300, used)
            fresh = await store.spend("new", 300, time.time() + LOSS_MARGIN_SECONDS + 1)
            return before, replay, fresh
        finally:
            await store.close()

    # BEFORE while Redis holds it; evicted, the replay is UNKNOWN (refused), not NOW; a new
    # value is spendable.
    before, replay, fresh = asyncio.run(run())
    assert before is Spent.BEFORE
    assert replay is Spent.UNKNOWN
    assert fresh is Spent.NOW


def test_a_redis_user_denied_info_stops_the_start(tmp_path: Path) -> None:
    """Without INFO the broker cannot tell a loss: a user the ACL denies it is refused at
    start with the reason, beside the same server's default user, which begins."""
    server = OwnRedis(tmp_path / "acl")
    try:
        redis.Redis(port=server.port).acl_setuser(
            "limited", enabled=True, passwords=["+secret"], keys=["*"],
            commands=["+@all", "-info"])
        limited = RedisEphemeralStore(f"redis://limited:secret@127.0.0.1:{server.port}/0",
                                      prefix="acl-test:")

        async def begin(store: RedisEphemeralStore) -> None:
            try:
                await store.begin(_first_use)
            finally:
                await store.close()

        with pytest.raises(ConfigError, match=r"may not run INFO \(grant it \+info\)"):
            asyncio.run(begin(limited))
        asyncio.run(begin(_store(server)))  # the control
    finally:
        server.stop()
