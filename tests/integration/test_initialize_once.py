"""``broker init`` on one database, from several places at once (nodes started together, each
with an empty data directory): one initialises it, every other one is refused, and the
database holds one account under one keyring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.clock import SystemClock
from broker.errors import ConfigError
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.runtime import initialize, open_entity_store
from broker.settings import Settings, load


def _settings(data_dir: Path, database_url: str) -> Settings:
    return load(None, environ={"BROKER_SERVER_DATA_DIR": str(data_dir),
                               "BROKER_STORE_DATABASE_URL": database_url,
                               "BROKER_AUDIT_SINK": "file",
                               "BROKER_AUDIT_PATH": str(data_dir.parent / "audit.log")})


async def _accounts(database_url: str, data_dir: Path) -> int:
    store = open_entity_store(_settings(data_dir, database_url))
    try:
        clock = SystemClock()
        return len(await IamService(store, Keyring.generate(clock), clock).list_accounts())
    finally:
        await store.close()


def test_several_inits_at_once_make_one_account(
        postgres_databases: Callable[[], str], tmp_path: Path) -> None:
    url = postgres_databases()
    dirs = [tmp_path / f"node{i}" / "data" for i in range(4)]

    async def all_at_once() -> list[object]:
        return await asyncio.gather(*(initialize(_settings(d, url)) for d in dirs),
                                    return_exceptions=True)

    outcomes = asyncio.run(all_at_once())
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, ConfigError)]
    assert len(made) == 1 and len(refused) == len(dirs) - 1, outcomes
    assert all("already holds accounts" in str(r) for r in refused)
    keyrings = [d for d in dirs if (d / "keyring.json").exists()]
    assert len(keyrings) == 1  # the refused left no keyring behind
    assert asyncio.run(_accounts(url, dirs[0])) == 1
    # And afterwards, as before: a later init on that database is refused too.
    with pytest.raises(ConfigError, match="already holds accounts"):
        asyncio.run(initialize(_settings(tmp_path / "late" / "data", url)))
