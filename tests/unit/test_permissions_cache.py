"""Permissions.cached under concurrency: requests that find an answer missing or expired
together share one build (one read of the store), never a build begun before this process's
own last write, and a failure is shared but not kept."""

from __future__ import annotations

import asyncio

import pytest

from broker.iam.permissions import Permissions


class Store:
    """A stand-in for the store's answer: counts builds, answers when released."""

    def __init__(self) -> None:
        self.builds = 0
        self.release = asyncio.Event()
        self.fail = False

    async def build(self) -> str:
        self.builds += 1
        number = self.builds
        await self.release.wait()
        if self.fail:
            raise RuntimeError("store down")
        return f"answer {number}"


def permissions(writes: list[int], ttl: float = 60) -> Permissions:
    return Permissions(None, None, cache_seconds=ttl,  # type: ignore[arg-type]
                       writes=lambda: writes[0])


def test_concurrent_misses_share_one_build() -> None:
    async def run() -> tuple[int, list[str]]:
        store, writes = Store(), [0]
        cache = permissions(writes)
        waiting = [asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
                   for _ in range(16)]
        await asyncio.sleep(0)
        store.release.set()
        answers = await asyncio.gather(*waiting)
        return store.builds, answers

    builds, answers = asyncio.run(run())
    assert builds == 1
    assert answers == ["answer 1"] * 16


def test_no_sharing_across_this_processs_write_and_the_control() -> None:
    """A request after a write in this process must not get a read begun before it."""
    async def run(write_between: bool) -> list[str]:
        store, writes = Store(), [0]
        cache = permissions(writes)
        first = asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
        await asyncio.sleep(0)
        if write_between:
            writes[0] += 2
        second = asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
        await asyncio.sleep(0)
        store.release.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(run(write_between=True)) == ["answer 1", "answer 2"]
    assert asyncio.run(run(write_between=False)) == ["answer 1", "answer 1"]  # the control


def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    async def run() -> tuple[list[object], str, int]:
        store, writes = Store(), [0]
        cache = permissions(writes)
        store.fail = True
        waiting = [asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
                   for _ in range(4)]
        await asyncio.sleep(0)
        store.release.set()
        failures = await asyncio.gather(*waiting, return_exceptions=True)
        store.fail = False
        again = await cache.cached(("role", "AROA1"), store.build)
        return failures, again, store.builds

    failures, again, builds = asyncio.run(run())
    assert all(isinstance(f, RuntimeError) for f in failures) and len(failures) == 4
    assert again == "answer 2" and builds == 2


def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    async def run() -> str:
        store, writes = Store(), [0]
        cache = permissions(writes)
        quitter = asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
        stayer = asyncio.create_task(cache.cached(("role", "AROA1"), store.build))
        await asyncio.sleep(0)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        store.release.set()
        return await stayer

    assert asyncio.run(run()) == "answer 1"


class SlowStore:
    """Another process's store: a key revoked while a read is under way."""

    def __init__(self) -> None:
        self.active = True
        self.reads = 0

    async def read(self) -> str:
        self.reads += 1
        seen = self.active
        await asyncio.sleep(0.05)
        return "ACTIVE" if seen else "REVOKED"


@pytest.mark.parametrize(("ttl", "expected"), [
    (0, ["ACTIVE", "REVOKED"]),  # 0: the store is read for every request
    (0.02, ["ACTIVE", "REVOKED"]),  # the read under way began longer ago than the cache time
    (60, ["ACTIVE", "ACTIVE"]),  # the control: within the cache time, as a kept answer
])
def test_a_read_under_way_is_joined_only_within_the_cache_time(
        ttl: float, expected: list[str]) -> None:
    async def run() -> list[str]:
        store = SlowStore()
        cache = permissions([0], ttl=ttl)
        first = asyncio.create_task(cache.cached(("access-key", "K"), store.read))
        await asyncio.sleep(0.03)
        store.active = False  # revoked by another process
        second = await cache.cached(("access-key", "K"), store.read)
        return [await first, second]

    assert asyncio.run(run()) == expected
