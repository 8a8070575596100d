"""What the benchmarks on the distributed stores share: a fresh PostgreSQL database on the
machine's server (dropped at the end), a Redis key prefix of their own, and ``broker serve`` on
both, initialised with ``broker init``.

The servers are the ones the test suite uses (BROKER_TEST_DATABASE_URL, BROKER_TEST_REDIS_URL;
by default PostgreSQL at 127.0.0.1:5432, user postgres, database test, and Redis at
127.0.0.1:6379): each run works in its own database and under its own prefix, and removes both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get("BROKER_TEST_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on the way out."""
    import psycopg

    scheme, _, rest = DATABASE_URL.partition("://")
    admin_url = f"{scheme.split('+', 1)[0]}://{rest}"  # psycopg's own URL: no driver name
    name = f"broker_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL at {admin_url} is needed: {exc}") from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def forget_prefix(prefix: str) -> None:
    """Delete the Redis keys under ``prefix``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for batch in _batched(client.scan_iter(match=prefix + "*", count=1000), 1000):
            client.delete(*batch)
    finally:
        client.close()


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Deployment:
    env: dict[str, str]  # the BROKER_* settings every process of this deployment shares
    root: dict[str, str]  # what broker init printed for the root user
    account_id: str
    work: Path


@contextmanager
def deployment(public_url: str | None = None, **settings: str) -> Iterator[Deployment]:
    """``broker init`` on a fresh database and Redis prefix (the file audit sink, in a
    temporary directory); ``settings`` are more BROKER_* variables. Removed on the way out."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {REDIS_URL} is needed: {exc}") from None
    finally:
        client.close()
    work = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    prefix = f"broker-bench-{uuid.uuid4().hex[:8]}:"
    with fresh_database() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
        env.update(BROKER_STORE_DATABASE_URL=database_url, BROKER_STORE_EPHEMERAL_URL=REDIS_URL,
                   BROKER_STORE_REDIS_PREFIX=prefix, BROKER_SERVER_DATA_DIR=str(work / "data"),
                   BROKER_AUDIT_SINK="file", BROKER_AUDIT_PATH=str(work / "audit.log"),
                   **settings)
        if public_url is not None:
            env["BROKER_SERVER_PUBLIC_URL"] = public_url
        try:
            init = subprocess.run([str(BIN / "broker"), "init", "--json"], env=env,
                                  capture_output=True, text=True, check=True, timeout=120)
            created = json.loads(init.stdout)
            yield Deployment(env, created["root"], created["account_id"], work)
        finally:
            forget_prefix(prefix)


@contextmanager
def serving(dep: Deployment, port: int, *, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """``broker serve`` on the deployment, ready (``/readyz``), stopped on the way out."""
    log = (dep.work / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([str(BIN / "broker"), "serve", "--port", str(port), "--workers",
                             str(workers)], env=dep.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"broker serve exited with {proc.returncode}: "
                                 f"{(dep.work / f'serve-{port}.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("broker serve did not become ready")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time used so far by the processes of a process group (``broker
    serve`` and its workers: each server runs in a session of its own), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
