"""A real cluster for end-to-end tests: three ``broker serve`` nodes (node 0 with two workers)
on one PostgreSQL, one Redis and one keyring, behind Debian's nginx as a round-robin load
balancer; and a Redis and a PostgreSQL of the test's own, which a fault test may stop and start
again on the same port (the machine's servers stay up).

The load balancer retries a request on the next node only when it never reached a broker
(``proxy_next_upstream error`` without ``non_idempotent``: nginx passes a POST that was sent to
no other node) and keeps no idle connections to the nodes, so a node that stops listening
(SIGTERM) or dies (SIGKILL) costs connection errors that nginx retries elsewhere, never a
request sent twice.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx

from tests.e2e.support import BIN, BrokerProcess, clean_env
from tests.helpers import free_port, unavailable
from tests.nginx import Nginx

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NODES = 3
# How long nginx passes over a node that refused a connection. A rolling restart waits this
# long after a node is ready before stopping the next, or all three may be passed over at once.
FAIL_TIMEOUT = 1


def _wait(probe: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


class OwnRedis:
    """A ``redis-server`` of the test's own on a spare port, keeping nothing on disk; stop()
    and start() again listen on the same port (an outage and a return, everything lost)."""

    def __init__(self, directory: Path, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "not installed (apt-get install redis-server)")
        assert binary is not None
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.options = options  # more redis-server options (they override the defaults)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("a")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), *self.options],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what it had not written to disk is gone (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class OwnPostgres:
    """A PostgreSQL 15 cluster of the test's own (initdb, trust authentication) on a spare
    port, its unix socket in its own directory; stop() (fast shutdown: sessions are ended) and
    start() again use the same port and data directory. Its database is ``broker``.

    As root, initdb and postgres refuse to run: they run as the ``postgres`` user then, in a
    directory of their own under the system's temporary directory (the test's own is root's
    and closed to others)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            unavailable("PostgreSQL 15", f"no {PG_BIN}/initdb (apt-get install postgresql-15)")
        self.user = "postgres" if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="broker-own-pg-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self.data = self.directory / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                        "-U", "postgres", "--no-sync", "-E", "UTF8"],
                       user=self.user, check=True, capture_output=True, timeout=120)
        self.start()
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE broker")

    def _dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self._dsn("broker")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        log = (self.directory / "postgres.log").open("a")
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "max_connections=100"],
            user=self.user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait(self._answers, f"PostgreSQL on port {self.port}")

    def _answers(self) -> bool:
        import psycopg

        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(self.directory / 'postgres.log').read_text()}")
        try:
            with psycopg.connect(self._dsn("postgres"), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, as when a server goes away."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)
        self.proc = None

    def _processes(self) -> list[int]:
        """The postmaster and its children (each backend leads a process group of its own)."""
        assert self.proc is not None
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                                  capture_output=True, text=True, check=False).stdout.split()
        return [self.proc.pid, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP the server and every backend: a server that hangs (or a network that drops
        packets) rather than refuses; connections open, nothing answered."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def lb_site(port: int, nodes: list[int], down: frozenset[int] = frozenset()) -> str:
    """The load balancer's nginx site: round robin over the nodes. A node that refuses a
    connection is passed over for FAIL_TIMEOUT seconds and the request goes to the next one; a
    request that reached a node is never sent to another (no ``non_idempotent``, no ``timeout``);
    no idle upstream connections are kept (a node that stops listening then refuses, which is
    safe to retry, rather than closing a kept connection under a request)."""
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout={FAIL_TIMEOUT}s"
                      + (" down" if i in down else "") + ";\n" for i, p in enumerate(nodes))
    return (
        "upstream broker_nodes {\n" + servers + "}\n"
        "server {\n"
        f"    listen 127.0.0.1:{port};\n"
        "    client_max_body_size 1m;\n"
        "    location / {\n"
        "        proxy_pass http://broker_nodes;\n"
        "        proxy_http_version 1.1;\n"
        "        proxy_set_header Host $http_host;\n"
        "        proxy_set_header X-Forwarded-For $remote_addr;\n"
        "        proxy_connect_timeout 1s;\n"
        "        proxy_read_timeout 30s;\n"
        "        proxy_next_upstream error;\n"
        "        proxy_next_upstream_tries 3;\n"
        "        add_header X-Upstream $upstream_addr always;\n"
        "    }\n"
        "}\n")


class Cluster:
    """``broker init`` once, three nodes on spare ports (node 0 with ``--workers 2``) and nginx
    in front. ``env`` names the stores (BROKER_STORE_DATABASE_URL, BROKER_STORE_EPHEMERAL_URL,
    BROKER_STORE_REDIS_PREFIX); the data directory (one keyring) and the public URL (the load
    balancer's) are the cluster's."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.lb_port = free_port()
        self.ports = [free_port() for _ in range(NODES)]
        self.env = clean_env(**{
            "BROKER_KEYRING_CHECK_INTERVAL_SECONDS": "1",
            "BROKER_IAM_LAST_USED_FLUSH_SECONDS": "1",
            **env,
            "BROKER_SERVER_DATA_DIR": str(directory / "data"),
            "BROKER_SERVER_PUBLIC_URL": self.url,
        })
        made = self.cli("init", "--json")
        root = json.loads(made)
        self.account_id: str = root["account_id"]
        self.root = {"AccessKeyId": root["root"]["access_key_id"],
                     "SecretAccessKey": root["root"]["secret_access_key"]}
        self.nodes: list[BrokerProcess | None] = [None] * NODES
        self.starts = [0] * NODES
        self.nginx: Nginx | None = None
        self.drained: frozenset[int] = frozenset()
        try:
            with ThreadPoolExecutor(NODES) as pool:
                list(pool.map(self.start, range(NODES)))
            (directory / "nginx").mkdir()
            self.nginx = Nginx(directory / "nginx", lb_site(self.lb_port, self.ports),
                               self.lb_port)
        except BaseException:
            self.close()
            raise

    # -- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The load balancer's URL: the cluster's public URL."""
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def node_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    # -- the nodes --------------------------------------------------------------------------

    def start(self, i: int) -> None:
        """Start node ``i`` on its port and wait until /readyz answers 200."""
        assert self.nodes[i] is None or self.nodes[i].proc.poll() is not None  # type: ignore
        self.starts[i] += 1
        args = ["--port", str(self.ports[i])] + (["--workers", "2"] if i == 0 else [])
        self.nodes[i] = BrokerProcess(args, self.env, self.ports[i],
                                      self.directory / f"node{i}.{self.starts[i]}.log")

    def node(self, i: int) -> BrokerProcess:
        node = self.nodes[i]
        assert node is not None
        return node

    def kill(self, i: int) -> None:
        """SIGKILL the node's process group (its workers too): no shutdown of any kind."""
        node = self.node(i)
        if node.proc.poll() is None:
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)
        node._log_file.close()

    def stop(self, i: int) -> int:
        """SIGTERM, as an orchestrator stops a node; its exit status."""
        return self.node(i).stop()

    def restart(self, i: int) -> int:
        code = self.stop(i)
        self.start(i)
        return code

    def running(self, i: int) -> bool:
        node = self.nodes[i]
        return node is not None and node.proc.poll() is None

    def drain(self, i: int, *, out: bool = True) -> None:
        """Take node ``i`` out of the load balancer (``down``) or put it back, as an operator
        does before stopping a node: nginx reloads (SIGHUP), its old workers finish what they
        carry, the new ones send nothing more to a drained node."""
        assert self.nginx is not None
        self.drained = self.drained | {i} if out else self.drained - {i}
        (self.nginx.prefix / "site.conf").write_text(
            lb_site(self.lb_port, self.ports, self.drained))
        self.nginx.proc.send_signal(signal.SIGHUP)
        node = f"127.0.0.1:{self.ports[i]}"

        def settled() -> bool:
            seen = {httpx.get(self.url + "/healthz", timeout=5).headers.get("x-upstream")
                    for _ in range(2 * NODES)}
            return (node in seen) != out

        _wait(settled, f"nginx {'draining' if out else 'restoring'} node {i}", timeout=10)

    def wait_ready(self, i: int, timeout: float = 30) -> None:
        self.node(i).wait_ready(timeout)

    def log(self, i: int) -> str:
        return self.node(i).output()

    # -- clients ----------------------------------------------------------------------------

    def client(self, service: str, creds: dict[str, str] | None = None,
               url: str | None = None) -> Any:
        """A boto3 client through the load balancer (or at ``url``), without retries."""
        creds = creds or self.root
        return boto3.client(
            service, endpoint_url=url or self.url, region_name="us-east-1",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds.get("SessionToken"),
            config=botocore.config.Config(retries={"max_attempts": 1},
                                          connect_timeout=5, read_timeout=30))

    def clients(self, service: str, creds: dict[str, str] | None = None) -> list[Any]:
        """One client per node, each talking to its node directly (not via the LB)."""
        return [self.client(service, creds, url) for url in self.node_urls]

    def cli(self, *args: str) -> str:
        """``broker ARGS`` with the cluster's environment; its standard output."""
        done = subprocess.run([str(BIN / "broker"), *args], env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"broker {' '.join(args)}: {done.stderr}")
        return done.stdout

    def ready(self) -> list[int]:
        """Each node's /readyz status code (0: no answer)."""
        codes = []
        for url in self.node_urls:
            try:
                codes.append(httpx.get(url + "/readyz", timeout=3).status_code)
            except httpx.HTTPError:
                codes.append(0)
        return codes

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(self._close_node, range(NODES)))

    def _close_node(self, i: int) -> None:
        node = self.nodes[i]
        if node is None:
            return
        if node.proc.poll() is None:
            try:
                node.stop()
            except subprocess.TimeoutExpired:
                os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(timeout=10)
        elif not node._log_file.closed:
            node._log_file.close()
