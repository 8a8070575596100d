from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import DATABASE_URL, REDIS_URL, Broker, start_broker, unavailable


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker on SQLite and in-process state, shared by the tests of one module."""
    b = start_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Make fresh PostgreSQL databases on the real server; all are dropped at the end."""
    admin = sa.create_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {DATABASE_URL}", str(exc.orig).strip().splitlines()[0])
    made: list[str] = []
    base = DATABASE_URL.rsplit("/", 1)[0]

    def make() -> str:
        name = f"broker_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return f"{base}/{name}"

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """One database for the whole session (tests that use it clear what they need)."""
    return postgres_databases()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", str(exc))
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def machine_cluster(tmp_path_factory: pytest.TempPathFactory,
                    postgres_databases: Callable[[], str], redis_url: str) -> Iterator[Any]:
    """tests/cluster.py's three nodes behind nginx, on a fresh database of the machine's
    PostgreSQL and a fresh prefix in its Redis, shared by the tests of one module."""
    from tests.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("cluster"), {
        "BROKER_STORE_DATABASE_URL": postgres_databases(),
        "BROKER_STORE_EPHEMERAL_URL": redis_url,
        "BROKER_STORE_REDIS_PREFIX": f"broker-cluster-{uuid.uuid4().hex[:8]}:"})
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same cluster on a Redis and a PostgreSQL of the module's own, which its tests may
    stop and start (each test leaves them running and every node up; see
    tests/e2e/test_faults.py's heal): (cluster, OwnRedis, OwnPostgres)."""
    from tests.cluster import Cluster, OwnPostgres, OwnRedis

    tmp_path = tmp_path_factory.mktemp("own-cluster")
    redis_server = OwnRedis(tmp_path / "redis")
    postgres = OwnPostgres()
    try:
        cluster = Cluster(tmp_path / "cluster", {
            "BROKER_STORE_DATABASE_URL": postgres.url,
            "BROKER_STORE_EPHEMERAL_URL": redis_server.url,
            "BROKER_STORE_REDIS_PREFIX": "broker:"})
        try:
            yield cluster, redis_server, postgres
        finally:
            cluster.close()
    finally:
        redis_server.stop()
        postgres.remove()
