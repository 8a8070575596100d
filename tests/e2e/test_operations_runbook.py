"""docs/operations.md's runbook, run: backup and restore on PostgreSQL and on SQLite, and an
upgrade, with the real tools (pg_dump, pg_restore, sqlite3, broker serve) and real clients.

Each shell step is read from the document itself: a fenced block whose first line is
``# runbook: NAME`` is run here by bash exactly as written, with the variables it names set to
this test's paths. A step that drifts from what the test expects fails here.

Key rotation across nodes is run by tests/e2e/test_distributed.py
(test_rotation_reaches_every_process, test_hosts_with_their_own_keyring_copies).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
import sqlalchemy as sa

from broker.clock import SystemClock
from broker.keyring import Keyring
from broker.store.sql import _MIGRATION_LOCK
from tests.e2e.support import BIN, ROOT, BrokerProcess, clean_env
from tests.helpers import free_port, unavailable

DOC = ROOT / "docs" / "operations.md"


def runbook(name: str, **variables: str) -> str:
    """Run the document's block ``name`` with bash, the broker's commands on PATH."""
    blocks = re.findall(r"```sh\n# runbook: ([\w-]+)\n(.*?)```", DOC.read_text(), re.DOTALL)
    found = [body for title, body in blocks if title == name]
    assert len(found) == 1, f"docs/operations.md has no single runbook block {name!r}"
    for used in set(re.findall(r"\$\{?([A-Z_]+)", found[0])):
        assert used in variables, f"runbook {name} uses ${used}, which the test does not set"
    for tool in ("pg_dump", "pg_restore", "sqlite3"):
        if re.search(rf"\b{tool}\b", found[0]) and shutil.which(tool) is None:
            unavailable(tool, "not on PATH (apt-get install postgresql-client / sqlite3)")
    env = clean_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **variables)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", found[0]], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"runbook {name}: {done.stderr}"
    return done.stdout


def client(url: str, service: str, creds: tuple[str, str]) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def serve(env: dict[str, str], log: Path) -> BrokerProcess:
    port = free_port()
    return BrokerProcess(["--port", str(port)], env, port, log)


def first_serve(env: dict[str, str], log: Path) -> tuple[BrokerProcess, tuple[str, str]]:
    """``broker serve`` on an empty data directory: it initialises it and prints the root
    credentials (one process fewer than ``broker init`` first)."""
    process = serve(env, log)
    return process, process.root_credentials()


def refuses_to_serve(env: dict[str, str], *args: str, status: int | None = None) -> str:
    """``broker serve`` that exits instead of serving (with ``status``, when given): what it
    printed."""
    done = subprocess.run([str(BIN / "broker"), "serve", "--port", str(free_port()), *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, done.stdout
    if status is not None:
        assert done.returncode == status, done.stdout + done.stderr
    return done.stdout + done.stderr


def populate(url: str, root: tuple[str, str]) -> tuple[str, str]:
    """A user with an access key and a role, through boto3: what a backup must keep."""
    iam = client(url, "iam", root)
    iam.create_user(UserName="alice")
    key = iam.create_access_key(UserName="alice")["AccessKey"]
    iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": "arn:aws:iam::" + account(url, root) + ":user/alice"}}]}))
    return key["AccessKeyId"], key["SecretAccessKey"]


def account(url: str, creds: tuple[str, str]) -> str:
    return str(client(url, "sts", creds).get_caller_identity()["Account"])


def everything_is_there(url: str, root: tuple[str, str], alice: tuple[str, str]) -> None:
    iam = client(url, "iam", root)
    assert iam.get_user(UserName="alice")["User"]["UserName"] == "alice"
    assert iam.get_role(RoleName="deployer")["Role"]["RoleName"] == "deployer"
    keys = iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [alice[0]]
    # The stored secret, sealed by the keyring before the backup, still opens: SigV4 with it.
    who = client(url, "sts", alice).get_caller_identity()
    assert who["Arn"].endswith(":user/alice")


@pytest.fixture
def stopping() -> Iterator[list[BrokerProcess]]:
    started: list[BrokerProcess] = []
    yield started
    for process in started:
        process.stop()


@dataclass
class Backup:
    """A PostgreSQL broker with a user, an access key and a role, backed up by the runbook,
    then stopped (its database stays, as after an upgrade's backup step)."""

    env: dict[str, str]
    database: str
    directory: Path
    root: tuple[str, str]
    alice: tuple[str, str]


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory,
           postgres_databases: Callable[[], str]) -> Backup:
    tmp = tmp_path_factory.mktemp("runbook-postgres")
    database = postgres_databases()
    env = clean_env(BROKER_STORE_DATABASE_URL=database, BROKER_SERVER_DATA_DIR=str(tmp / "data"))
    old, root = first_serve(env, tmp / "old.log")
    try:
        alice = populate(old.url, root)
        directory = tmp / "backup"
        directory.mkdir()
        runbook("postgres-backup", DATABASE_URL=database, BACKUP=str(directory),
                KEYRING=str(tmp / "data" / "keyring.json"))  # while it serves
    finally:
        old.stop()
    return Backup(env, database, directory, root, alice)


def restore(backup: Backup, make_database: Callable[[], str], data: Path) -> dict[str, str]:
    """The runbook's restore into a new, empty database: the environment of a broker on it."""
    database = make_database()  # createdb
    runbook("postgres-restore", NEW_DATABASE_URL=database, BACKUP=str(backup.directory),
            DATA_DIR=str(data), KEYRING=str(data / "keyring.json"))
    assert (data / "keyring.json").stat().st_mode & 0o777 == 0o600
    return {**backup.env, "BROKER_STORE_DATABASE_URL": database,
            "BROKER_SERVER_DATA_DIR": str(data)}


def test_postgres_backup_restores_with_its_keyring(
        backup: Backup, tmp_path: Path, postgres_databases: Callable[[], str],
        stopping: list[BrokerProcess]) -> None:
    new = serve(restore(backup, postgres_databases, tmp_path / "restored"), tmp_path / "new.log")
    stopping.append(new)
    everything_is_there(new.url, backup.root, backup.alice)


def test_postgres_backup_beside_another_keyring_fails_closed(
        backup: Backup, tmp_path: Path, postgres_databases: Callable[[], str]) -> None:
    """The control of the restore: the same backup, restored the same way, beside another
    broker's keyring. The broker does not serve at all: the first sealed record it needs (the
    SAML signing key) does not open, and nothing is made anew in its place."""
    env = restore(backup, postgres_databases, tmp_path / "wrong")
    Keyring.generate(SystemClock(), path=tmp_path / "wrong" / "keyring.json").save()
    kid = json.loads((backup.directory / "keyring.json").read_text())["keys"][0]["id"]
    refusal = refuses_to_serve(env)
    assert f"key {kid!r} is unknown or retired" in refusal
    assert "is it this database's keyring?" in refusal  # what an administrator reads


def test_sqlite_online_backup_restores_into_a_new_data_dir(
        tmp_path: Path, stopping: list[BrokerProcess]) -> None:
    data = tmp_path / "data"
    env = clean_env(BROKER_SERVER_DATA_DIR=str(data))
    running, root = first_serve(env, tmp_path / "running.log")
    stopping.append(running)
    alice = populate(running.url, root)
    backup = tmp_path / "backup"
    backup.mkdir()
    runbook("sqlite-backup", DATA_DIR=str(data), BACKUP=str(backup))  # while it serves
    client(running.url, "iam", root).create_user(UserName="after-the-backup")
    running.stop()

    restored = tmp_path / "restored"
    runbook("sqlite-restore", DATA_DIR=str(restored), BACKUP=str(backup))
    new = serve({**env, "BROKER_SERVER_DATA_DIR": str(restored)}, tmp_path / "new.log")
    stopping.append(new)
    everything_is_there(new.url, root, alice)
    users = client(new.url, "iam", root).list_users()["Users"]
    assert [u["UserName"] for u in users] == ["alice"]  # what the backup held, no more

    # The control: the database without its keyring. The broker refuses to start rather than
    # make a new keyring that could open none of the stored secrets.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(backup / "broker.db", lone / "broker.db")
    output = refuses_to_serve({**env, "BROKER_SERVER_DATA_DIR": str(lone)})
    assert "already holds a database (broker.db) but no keyring" in output
    assert not (lone / "keyring.json").exists()


HEAD = "0001"  # the newest revision in broker/store/migrations/versions


class PatientStart(BrokerProcess):
    """A node given three minutes to become ready: it may wait for a lock the test holds."""

    def wait_ready(self, timeout: float = 180) -> None:
        super().wait_ready(timeout)


def start_at_once(envs: list[dict[str, str]], logs: Path, stopping: list[BrokerProcess],
                  while_starting: Callable[[], None] = lambda: None) -> list[BrokerProcess]:
    """``broker serve`` for each environment, all started together, each waited for until it
    is ready (a node that exits instead fails the test with its output); ``while_starting``
    runs once they are all started, before they are waited for."""

    def start(i: int) -> BrokerProcess:
        port = free_port()
        return PatientStart(["--port", str(port)], envs[i], port, logs / f"node{i}.log")

    with ThreadPoolExecutor(len(envs)) as pool:
        starts = [pool.submit(start, i) for i in range(len(envs))]
        try:
            while_starting()
        finally:
            nodes: list[BrokerProcess] = []
            failed: list[str] = []
            for started in starts:
                try:
                    nodes.append(started.result())
                except RuntimeError as exc:  # it exited, or never became ready
                    failed.append(str(exc)[-2000:])
            stopping.extend(nodes)
    assert not failed, failed
    return nodes


def schema(database: str) -> tuple[list[str], list[str]]:
    """The database's tables, and the revisions its version table holds."""
    engine = engine_of(database)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            if "broker_alembic_version" not in tables:
                return tables, []
            return tables, list(conn.execute(sa.text(
                "SELECT version_num FROM broker_alembic_version")).scalars().all())
    finally:
        engine.dispose()


def engine_of(database: str) -> sa.Engine:
    return sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))


def waiting_for_the_migration_lock(conn: sa.Connection) -> int:
    """How many sessions wait for the advisory lock migrations take (as one bigint key: its
    low 32 bits are pg_locks' objid)."""
    return int(conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND objid = :key AND database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database())"), {"key": _MIGRATION_LOCK}).scalar_one())


def test_nodes_started_at_once_on_an_empty_database_migrate_it_once(
        tmp_path: Path, postgres_databases: Callable[[], str], redis_url: str,
        stopping: list[BrokerProcess]) -> None:
    """A first install: one keyring (broker init's, a copy on each node) and an empty database.
    Three nodes of two workers each start together, and each of the six processes runs the
    first migration. The test holds the migration lock until all six wait for it, so that
    they race for the empty schema at the same moment: one creates it while the others wait,
    then find it at its head. Every node comes up (a second, concurrent CREATE TABLE would
    fail a worker's start, and with it its node's) and the schema holds one revision."""
    database = postgres_databases()
    assert schema(database) == ([], [])  # empty indeed
    keyring = tmp_path / "keyring.json"
    Keyring.generate(SystemClock(), path=keyring).save()
    envs = []
    for i in range(3):
        data = tmp_path / f"data{i}"
        data.mkdir(mode=0o700)
        shutil.copy(keyring, data / "keyring.json")
        envs.append(clean_env(BROKER_STORE_DATABASE_URL=database,
                              BROKER_SERVER_DATA_DIR=str(data), BROKER_SERVER_WORKERS="2",
                              BROKER_STORE_EPHEMERAL_URL=redis_url,
                              BROKER_STORE_REDIS_PREFIX=f"first-{uuid.uuid4().hex[:8]}:"))
    engine = engine_of(database)
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})

            def all_six_wait() -> None:
                deadline = time.monotonic() + 150
                try:
                    while waiting_for_the_migration_lock(holder) < 6:
                        assert time.monotonic() < deadline, "the workers never waited for it"
                        time.sleep(0.2)
                finally:  # all at once
                    holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                                   {"key": _MIGRATION_LOCK})

            nodes = start_at_once(envs, tmp_path, stopping, all_six_wait)
    finally:
        engine.dispose()
    assert schema(database)[1] == [HEAD]
    # One schema, one keyring: an account made through one node is served by every node.
    made = subprocess.run([str(BIN / "broker"), "accounts", "create", "--json"], env=envs[0],
                          capture_output=True, text=True, timeout=60, check=True)
    root = json.loads(made.stdout)["root"]
    creds = (root["access_key_id"], root["secret_access_key"])
    assert {account(node.url, creds) for node in nodes} == {json.loads(made.stdout)[
        "account_id"]}


def test_an_upgrade_migrates_under_the_lock_and_refuses_going_back(
        backup: Backup, tmp_path: Path, redis_url: str, stopping: list[BrokerProcess]) -> None:
    """After the backup step, three nodes of the new release start at once on the database:
    each takes the migration lock in turn, finds the schema at its head, and all serve the
    same data. (The schema has one revision so far, so here the head is already there; the
    test above runs a migration itself, from nothing to the head, on six processes at once.)
    A release older than the schema then refuses to start, exiting 3 with one worker or two;
    the way back is the restore above."""
    nodes = start_at_once([backup.env] * 3, tmp_path, stopping)
    for node in nodes:
        everything_is_there(node.url, backup.root, backup.alice)
    for node in nodes:
        node.stop()
    assert schema(backup.database)[1] == [HEAD]
    engine = engine_of(backup.database)
    try:
        with engine.begin() as conn:
            # What a later release's migration leaves: a revision this release does not know.
            conn.execute(sa.text("UPDATE broker_alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    assert "9999" in refuses_to_serve(backup.env, status=3)
    # With several workers too: the supervisor fails as one worker does.
    assert "9999" in refuses_to_serve({**backup.env, "BROKER_SERVER_WORKERS": "2",
                                       "BROKER_STORE_EPHEMERAL_URL": redis_url}, status=3)
