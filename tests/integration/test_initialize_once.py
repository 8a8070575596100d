"""``broker init`` on one database, from several places at once (nodes started together, each
with an empty data directory): one initialises it, every other one is refused, and the
database holds one account under one keyring."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.clock import SystemClock
from broker.errors import ConfigError, NotFound
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.runtime import INSTALLATION_KIND, initialize, open_entity_store
from broker.settings import Settings, load
from broker.store.base import GLOBAL, Record, Ref


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
    # Refused as the database already holding an account, or as another init being at it.
    assert all("already holds accounts" in str(r) or "initialising this database now" in str(r)
               for r in refused), refused
    keyrings = [d for d in dirs if (d / "keyring.json").exists()]
    assert len(keyrings) == 1  # the refused left no keyring behind
    assert asyncio.run(_accounts(url, dirs[0])) == 1
    # And afterwards, as before: a later init on that database is refused too.
    with pytest.raises(ConfigError, match="already holds accounts"):
        asyncio.run(initialize(_settings(tmp_path / "late" / "data", url)))


def test_a_claim_left_by_an_init_that_stopped_midway_is_taken_over(
        postgres_databases: Callable[[], str], tmp_path: Path) -> None:
    """An init killed between its claim and its account left the claim: a fresh one (another
    init at work) refuses, one older than a minute is taken over and the database
    initialised — the control of each other."""
    url = postgres_databases()

    async def claim(age: timedelta) -> None:
        store = open_entity_store(_settings(tmp_path / "claimer" / "data", url))
        try:
            await store.migrate()
            with contextlib.suppress(NotFound):
                await store.delete(Ref(INSTALLATION_KIND, GLOBAL, "first"))
            await store.create(Record(kind=INSTALLATION_KIND, account=GLOBAL, key="first",
                                      data={"initialised": (datetime.now(UTC) - age)
                                            .isoformat()}))
        finally:
            await store.close()

    asyncio.run(claim(timedelta(seconds=5)))
    with pytest.raises(ConfigError, match="initialising this database now"):
        asyncio.run(initialize(_settings(tmp_path / "a" / "data", url)))
    assert not (tmp_path / "a" / "data" / "keyring.json").exists()
    asyncio.run(claim(timedelta(minutes=5)))
    account, _ = asyncio.run(initialize(_settings(tmp_path / "b" / "data", url)))
    assert (tmp_path / "b" / "data" / "keyring.json").exists()
    assert asyncio.run(_accounts(url, tmp_path / "b" / "data")) == 1 and account.id


def test_an_sp_key_that_cannot_be_read_does_not_lose_the_root_credentials(
        tmp_path: Path) -> None:
    """The SAML SP key is made after the account: a key file that cannot be read leaves the
    account, its keyring and its root credentials (shown as always, with a warning; a start
    reports the setting), where it used to raise with the credentials made and never shown."""
    data_dir = tmp_path / "data"
    settings = load(None, environ={
        "BROKER_SERVER_DATA_DIR": str(data_dir), "BROKER_AUDIT_SINK": "file",
        "BROKER_AUDIT_PATH": str(tmp_path / "audit.log"),
        "BROKER_SAML_SP_KEY_FILE": str(tmp_path / "missing.pem"),
        "BROKER_SAML_SP_CERTIFICATE_FILE": str(tmp_path / "missing.crt")})
    account, key = asyncio.run(initialize(settings))
    assert key.secret_access_key and (data_dir / "keyring.json").exists()
    assert key.key.access_key_id in (tmp_path / "audit.log").read_text()  # on record
    # The control: the same broker's start refuses the setting that init passed over.
    from broker.runtime import open_runtime

    with pytest.raises(ConfigError, match=r"saml\.sp_key_file"):
        asyncio.run(open_runtime(settings))
    assert account.id
