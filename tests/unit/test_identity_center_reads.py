"""identitycenter/reads.py: an answer is kept only while its account's generation stands, a
write of an Identity Center record replaces the generation, and a generation that went
missing is never one seen before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from broker.clock import FixedClock
from broker.identitycenter.reads import PREFIX, BumpingStore, Generations, Reads
from broker.store.base import Record
from broker.store.memory import MemoryEntityStore, MemoryEphemeralStore


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def world() -> tuple[MemoryEphemeralStore, Generations, Reads, BumpingStore]:
    ephemeral = MemoryEphemeralStore(FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    generations = Generations(ephemeral)
    return ephemeral, generations, Reads(generations, max_age=60), \
        BumpingStore(MemoryEntityStore(), generations)


def test_an_answer_is_kept_until_an_identity_center_write() -> None:
    async def go() -> list[int]:
        _, _, reads, store = world()
        loads: list[int] = []

        async def load() -> int:
            loads.append(1)
            return len(loads)

        seen = [await reads.cached("111122223333", "k", load) for _ in range(3)]
        # Another kind's write (an IAM user, say) keeps it; an sso_ record's replaces it.
        await store.create(Record(kind="user", account="111122223333", key="x", data={}))
        seen.append(await reads.cached("111122223333", "k", load))
        await store.create(Record(kind="sso_user", account="111122223333", key="y", data={}))
        seen.append(await reads.cached("111122223333", "k", load))
        # Another account's write does not touch this one's.
        await store.create(Record(kind="sso_user", account="444455556666", key="y", data={}))
        seen.append(await reads.cached("111122223333", "k", load))
        return seen

    assert run(go()) == [1, 1, 1, 1, 2, 2]


def test_a_lost_generation_is_never_one_seen_before() -> None:
    async def go() -> tuple[str, str, str]:
        ephemeral, generations, _, _ = world()
        first = await generations.current("111122223333")
        await ephemeral.delete(PREFIX + "111122223333")  # the store restarted empty
        second = await generations.current("111122223333")
        return first, second, await generations.current("111122223333")

    first, second, third = run(go())
    assert first != second and second == third


def test_with_no_max_age_nothing_is_kept() -> None:
    async def go() -> tuple[int, int]:
        _, generations, _, _ = world()
        counts = []
        for max_age in (0.0, 60.0):
            reads = Reads(generations, max_age=max_age)
            loads: list[int] = []

            async def load(loads: list[int] = loads) -> int:
                loads.append(1)
                return len(loads)

            for _ in range(3):
                await reads.cached("111122223333", "k", load)
            counts.append(len(loads))
        return counts[0], counts[1]

    assert run(go()) == (3, 1)
