"""The durable entity store on SQL: SQLite (the embedded default) and PostgreSQL.

One table holds every record (see store/base.py for why). Atomicity comes from the database:

* SQLite: every writing transaction starts with ``BEGIN IMMEDIATE``, so writers are serialised;
  reads use a second engine in autocommit mode and never wait for a writer (WAL journal).
* PostgreSQL: a writer locks the rows it depends on with ``SELECT ... FOR UPDATE`` (the parent
  of a new child, the record being updated or deleted), so a quota count, a "has no children"
  check and the write that follows cannot interleave with another writer's.

The schema is managed by Alembic (store/migrations); ``migrate()`` upgrades to head under a
lock, so several processes starting at once are safe.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from broker.errors import (
    AlreadyExists,
    ConfigError,
    Conflict,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
)
from broker.metrics import watch_engine
from broker.store.base import Data, Record, Ref, check_storable, storable, within

metadata = sa.MetaData()

_KEY = sa.String(512).with_variant(sa.String(512, collation="C"), "postgresql")

records = sa.Table(
    "broker_records",
    metadata,
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("account", sa.String(32), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("parent_kind", sa.String(40), nullable=True),
    sa.Column("parent_key", _KEY, nullable=True),
    sa.Column("lookup", sa.String(512), nullable=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.UniqueConstraint("kind", "lookup", name="uq_broker_records_lookup"),
    sa.Index("ix_broker_records_parent", "account", "parent_kind", "parent_key", "kind"),
)

_MIGRATION_LOCK = 0x62726B72  # "brkr": the advisory lock PostgreSQL migrations hold
# A PostgreSQL that does not answer (frozen, or a network that drops packets) costs a request
# at most this long, waiting for a pooled connection included; then ServiceUnavailable. Every
# operation is a few rows or one page: far below it on any healthy server.
TIMEOUT_SECONDS = 5.0

P = ParamSpec("P")
T = TypeVar("T")


def _bounded(method: Callable[Concatenate[SqlEntityStore, P], Coroutine[Any, Any, T]]
             ) -> Callable[Concatenate[SqlEntityStore, P], Coroutine[Any, Any, T]]:
    """The operation within the store's time bound (PostgreSQL; SQLite is a local file)."""

    @functools.wraps(method)
    async def bounded(self: SqlEntityStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._timeout is None:
            return await method(self, *args, **kwargs)
        return await within(self._timeout, method(self, *args, **kwargs), self.dialect,
                            self._abandoned)

    return bounded


def async_url(url: str) -> str:
    """The SQLAlchemy URL with the async driver the broker uses for that database."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"store.database_url: not a URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    raise ConfigError(
        f"store.database_url: unsupported database {scheme!r} (use sqlite:/// or postgresql://)"
    )


class SqlEntityStore:
    def __init__(self, url: str, *, pool_size: int = 5,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self._url = async_url(url)
        self._sqlite = self._url.startswith("sqlite")
        self._timeout: float | None = None if self._sqlite else timeout
        self._abandoned: set[asyncio.Task[Any]] = set()
        if self._sqlite:
            path = sa.engine.make_url(self._url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._engine = create_async_engine(self._url)
            self._reader = create_async_engine(self._url)
            _sqlite_setup(self._engine, write=True)
            _sqlite_setup(self._reader, write=False)
        else:
            self._engine = create_async_engine(
                self._url, pool_size=pool_size, pool_pre_ping=True, pool_recycle=1800,
                connect_args={"connect_timeout": max(1, int(timeout))},
            )
            self._reader = self._engine
        watch_engine(self._engine.sync_engine)  # round trips and failures, for metrics
        if self._reader is not self._engine:
            watch_engine(self._reader.sync_engine)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    # -- lifecycle ------------------------------------------------------------------------------

    async def migrate(self) -> None:
        async with self._write() as conn:
            if not self._sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade_to_head)

    @_bounded
    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        await self._engine.dispose()
        if self._reader is not self._engine:
            await self._reader.dispose()

    # -- the protocol ---------------------------------------------------------------------------

    @_bounded
    async def create(self, record: Record, *, max_siblings: int | None = None) -> Record:
        check_storable(record)
        try:
            async with self._write() as conn:
                if record.parent is not None:
                    await self._lock(conn, record.parent)
                    if max_siblings is not None:
                        count = await conn.scalar(
                            sa.select(sa.func.count()).select_from(records).where(
                                *_children_of(record.parent), records.c.kind == record.kind
                            )
                        )
                        if (count or 0) >= max_siblings:
                            raise QuotaExceeded(f"{record.parent} has {count} {record.kind}")
                await conn.execute(records.insert().values(**_row(record, version=1)))
        except IntegrityError:
            raise AlreadyExists(str(record.ref)) from None
        return Record(
            kind=record.kind,
            account=record.account,
            key=record.key,
            data=json.loads(_dump(record.data)),
            parent=record.parent,
            lookup=record.lookup,
            version=1,
        )

    @_bounded
    async def get(self, ref: Ref) -> Record:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        async with self._read() as conn:
            row = (await conn.execute(sa.select(records).where(*_is(ref)))).first()
        if row is None:
            raise NotFound(str(ref))
        return _record(row._mapping)

    @_bounded
    async def find(self, kind: str, lookup: str) -> Record:
        if not storable(kind, lookup):
            raise NotFound(f"{kind} lookup {lookup!r}")
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(records).where(records.c.kind == kind, records.c.lookup == lookup)
                )
            ).first()
        if row is None:
            raise NotFound(f"{kind} lookup {lookup}")
        return _record(row._mapping)

    @_bounded
    async def update(self, ref: Ref, change: Callable[[Record], Data]) -> Record:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        async with self._write() as conn:
            current = _record(await self._lock(conn, ref))
            data = change(current)
            await conn.execute(
                records.update()
                .where(*_is(ref))
                .values(data=_dump(data), version=current.version + 1)
            )
        return Record(
            kind=current.kind,
            account=current.account,
            key=current.key,
            data=json.loads(_dump(data)),
            parent=current.parent,
            lookup=current.lookup,
            version=current.version + 1,
        )

    @_bounded
    async def delete(self, ref: Ref, *, blocked_by: tuple[str, ...] = (),
                     check: Callable[[Record], None] | None = None) -> None:
        if not storable(ref.kind, ref.account, ref.key):
            raise NotFound(str(ref))
        async with self._write() as conn:
            locked = await self._lock(conn, ref)
            if check is not None:
                check(_record(locked))
            for kind in blocked_by:
                found = await conn.scalar(
                    sa.select(records.c.key)
                    .where(*_children_of(ref), records.c.kind == kind)
                    .limit(1)
                )
                if found is not None:
                    raise Conflict(f"{ref} still has {kind} records")
            await conn.execute(records.delete().where(*_children_of(ref)))
            await conn.execute(records.delete().where(*_is(ref)))

    @_bounded
    async def list(
        self,
        kind: str,
        account: str,
        *,
        parent: Ref | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        if not storable(kind, account, after, *((parent.kind, parent.key) if parent else ())):
            return []
        query = sa.select(records).where(records.c.kind == kind, records.c.account == account)
        if parent is not None:
            query = query.where(*_children_of(parent))
        if after is not None:
            query = query.where(records.c.key > after)
        query = query.order_by(records.c.key)
        if limit is not None:
            query = query.limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r._mapping) for r in rows]

    # -- plumbing -------------------------------------------------------------------------------

    async def _lock(self, conn: AsyncConnection, ref: Ref) -> Any:
        query = sa.select(records).where(*_is(ref))
        if not self._sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(str(ref))
        return row._mapping

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (DBAPIError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{self.dialect}: {type(exc).__name__}") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reader.connect() as conn:
                yield conn
        except (DBAPIError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{self.dialect}: {type(exc).__name__}") from exc


def _sqlite_setup(engine: AsyncEngine, *, write: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if write:

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade_to_head(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("broker.store") / "migrations"))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _is(ref: Ref) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        records.c.kind == ref.kind,
        records.c.account == ref.account,
        records.c.key == ref.key,
    )


def _children_of(parent: Ref) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        records.c.account == parent.account,
        records.c.parent_kind == parent.kind,
        records.c.parent_key == parent.key,
    )


def _dump(data: Data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _row(record: Record, *, version: int) -> dict[str, Any]:
    if record.parent is not None and record.parent.account != record.account:
        raise ValueError("a record's parent must be in the same account")
    return {
        "kind": record.kind,
        "account": record.account,
        "key": record.key,
        "parent_kind": record.parent.kind if record.parent else None,
        "parent_key": record.parent.key if record.parent else None,
        "lookup": record.lookup,
        "data": _dump(record.data),
        "version": version,
    }


def _record(row: Any) -> Record:
    parent = (
        Ref(row["parent_kind"], row["account"], row["parent_key"])
        if row["parent_kind"] is not None
        else None
    )
    return Record(
        kind=row["kind"],
        account=row["account"],
        key=row["key"],
        data=json.loads(row["data"]),
        parent=parent,
        lookup=row["lookup"],
        version=row["version"],
    )
