"""One conformance suite for every EntityStore backend: memory (the reference), SQLite and
PostgreSQL (the real server of this machine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from broker.errors import AlreadyExists, Conflict, NotFound, QuotaExceeded
from broker.store.base import EntityStore, Record, Ref
from broker.store.memory import MemoryEntityStore
from broker.store.sql import SqlEntityStore

pytestmark = pytest.mark.anyio

A = "111111111111"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EntityStore]:
    backend: EntityStore
    if request.param == "memory":
        backend = MemoryEntityStore()
    elif request.param == "sqlite":
        backend = SqlEntityStore(f"sqlite:///{tmp_path / 'entities.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        backend = SqlEntityStore(url, pool_size=10)
    await backend.migrate()
    if request.param == "postgres":
        async with backend._engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(sa.text("DELETE FROM broker_records"))
    yield backend
    await backend.close()


def rec(kind: str, key: str, parent: Ref | None = None, lookup: str | None = None,
        **data: Any) -> Record:
    return Record(kind=kind, account=A, key=key, data=data or {"k": key}, parent=parent,
                  lookup=lookup)


async def test_create_get_find(store: EntityStore) -> None:
    created = await store.create(rec("user", "alice", lookup="AIDA1", name="Alice", n=[1, 2]))
    assert created.version == 1
    got = await store.get(Ref("user", A, "alice"))
    assert got.data == {"name": "Alice", "n": [1, 2]} and got.version == 1
    assert (await store.find("user", "AIDA1")).key == "alice"
    with pytest.raises(NotFound):
        await store.get(Ref("user", A, "bob"))
    with pytest.raises(NotFound):
        await store.find("user", "AIDA2")
    with pytest.raises(NotFound):
        await store.get(Ref("user", "222222222222", "alice"))


async def test_keys_and_lookups_are_unique(store: EntityStore) -> None:
    await store.create(rec("user", "alice", lookup="L1"))
    with pytest.raises(AlreadyExists):
        await store.create(rec("user", "alice"))
    with pytest.raises(AlreadyExists):
        await store.create(rec("user", "carol", lookup="L1"))
    await store.create(rec("group", "alice", lookup="L1"))  # other kinds have their own space
    other = Record(kind="user", account="222222222222", key="alice", data={})
    await store.create(other)


async def test_update_is_read_modify_write(store: EntityStore) -> None:
    await store.create(rec("counter", "c", n=0))
    ref = Ref("counter", A, "c")

    async def bump() -> None:
        await store.update(ref, lambda r: {"n": r.data["n"] + 1})

    await asyncio.gather(*(bump() for _ in range(20)))
    got = await store.get(ref)
    assert got.data == {"n": 20} and got.version == 21


async def test_update_that_raises_writes_nothing(store: EntityStore) -> None:
    await store.create(rec("user", "u", x=1))

    def refuse(record: Record) -> dict[str, Any]:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.update(Ref("user", A, "u"), refuse)
    assert (await store.get(Ref("user", A, "u"))).data == {"x": 1}
    with pytest.raises(NotFound):
        await store.update(Ref("user", A, "ghost"), lambda r: {})


async def test_children_need_a_parent_and_respect_quota(store: EntityStore) -> None:
    owner = Ref("user", A, "alice")
    with pytest.raises(NotFound):
        await store.create(rec("key", "k0", parent=owner), max_siblings=2)
    await store.create(rec("user", "alice"))
    await store.create(rec("key", "k1", parent=owner), max_siblings=2)
    await store.create(rec("key", "k2", parent=owner), max_siblings=2)
    with pytest.raises(QuotaExceeded):
        await store.create(rec("key", "k3", parent=owner), max_siblings=2)
    assert [r.key for r in await store.list("key", A, parent=owner)] == ["k1", "k2"]


async def test_quota_holds_under_concurrency(store: EntityStore) -> None:
    owner = Ref("user", A, "bob")
    await store.create(rec("user", "bob"))

    async def attempt(i: int) -> bool:
        try:
            await store.create(rec("key", f"k{i:02d}", parent=owner), max_siblings=2)
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sum(results) == 2
    assert len(await store.list("key", A, parent=owner)) == 2


async def test_delete_blocked_by_children_and_cascading_others(store: EntityStore) -> None:
    owner = Ref("user", A, "alice")
    await store.create(rec("user", "alice", lookup="AIDA9"))
    await store.create(rec("key", "k1", parent=owner, lookup="AKIA1"))
    await store.create(rec("note", "n1", parent=owner))
    with pytest.raises(Conflict):
        await store.delete(owner, blocked_by=("key",))
    assert (await store.get(owner)).key == "alice"
    await store.delete(Ref("key", A, "k1"))
    await store.delete(owner, blocked_by=("key",))
    with pytest.raises(NotFound):
        await store.get(owner)
    with pytest.raises(NotFound):
        await store.get(Ref("note", A, "n1"))  # children of other kinds went with it
    with pytest.raises(NotFound):
        await store.find("user", "AIDA9")
    with pytest.raises(NotFound):
        await store.delete(owner)
    await store.create(rec("user", "alice", lookup="AIDA9"))  # the lookup is free again


async def test_delete_and_child_create_do_not_interleave(store: EntityStore) -> None:
    for round_ in range(5):
        owner = Ref("user", A, f"u{round_}")
        await store.create(rec("user", f"u{round_}"))

        async def add_key(owner: Ref = owner, round_: int = round_) -> str:
            try:
                await store.create(rec("key", f"k{round_}", parent=owner), max_siblings=2)
            except NotFound:
                return "no parent"
            return "created"

        async def remove(owner: Ref = owner) -> str:
            try:
                await store.delete(owner, blocked_by=("key",))
            except Conflict:
                return "conflict"
            return "deleted"

        created, deleted = await asyncio.gather(add_key(), remove())
        keys = await store.list("key", A, parent=owner)
        # Either the key came first (and blocked the delete) or the delete did: never an
        # orphaned key under a deleted user.
        assert (created, deleted) in {("created", "conflict"), ("no parent", "deleted")}
        assert len(keys) == (1 if created == "created" else 0)


async def test_list_orders_pages_and_filters(store: EntityStore) -> None:
    for name in ["b", "a", "c_d", "C", "a-b", "z"]:
        await store.create(rec("user", name))
    await store.create(Record(kind="user", account="222222222222", key="x", data={}))
    keys = [r.key for r in await store.list("user", A)]
    assert keys == sorted(keys) and len(keys) == 6  # byte order, whatever the collation
    page = await store.list("user", A, limit=2)
    rest = await store.list("user", A, after=page[-1].key)
    assert [r.key for r in page + rest] == keys


async def test_data_round_trips_json(store: EntityStore) -> None:
    data = {"s": "ünïcode ☃", "n": 1, "f": 1.5, "b": True, "z": None, "l": [{"k": "v"}]}
    await store.create(rec("user", "u", **data))
    assert dict((await store.get(Ref("user", A, "u"))).data) == data


async def test_ping(store: EntityStore) -> None:
    """A reachable store answers its ping (the control of the unreachable case below)."""
    assert await store.ping() is None  # type: ignore[func-returns-value]


async def test_unreachable_database_is_unavailable() -> None:
    from broker.errors import StoreUnavailable

    dead = SqlEntityStore("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailable):
        await dead.ping()
    with pytest.raises(StoreUnavailable):
        await dead.create(rec("user", "u"))
    await dead.close()


async def test_names_with_control_characters(store: EntityStore) -> None:
    """No backend keeps a NUL byte in a name the same way: none stores one, none finds one."""
    with pytest.raises(ValueError, match="control characters"):
        await store.create(rec("user", "a\x00b"))
    with pytest.raises(ValueError, match="control characters"):
        await store.create(rec("user", "ok", lookup="L\x00"))
    await store.create(rec("user", "ok", lookup="L1"))  # the control
    with pytest.raises(NotFound):
        await store.get(Ref("user", A, "ok\x00"))
    with pytest.raises(NotFound):
        await store.find("user", "L1\x00")
    with pytest.raises(NotFound):
        await store.update(Ref("user", A, "\x00"), lambda r: {})
    with pytest.raises(NotFound):
        await store.delete(Ref("user", A, "\x00"))
    assert await store.list("user", A, after="\x00") == []
    assert [r.key for r in await store.list("user", A)] == ["ok"]


async def test_delete_checks_the_locked_record_first(store: EntityStore) -> None:
    await store.create(rec("user", "u", groups=["g1"]))

    def in_no_group(record: Record) -> None:
        if record.data["groups"]:
            raise Conflict("still in a group")

    with pytest.raises(Conflict):
        await store.delete(Ref("user", A, "u"), check=in_no_group)
    assert (await store.get(Ref("user", A, "u"))).data == {"groups": ["g1"]}
    await store.update(Ref("user", A, "u"), lambda r: {"groups": []})
    await store.delete(Ref("user", A, "u"), check=in_no_group)  # the control
    with pytest.raises(NotFound):
        await store.get(Ref("user", A, "u"))
