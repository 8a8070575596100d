"""`broker serve` stopped by SIGTERM, as an orchestrator stops it: new connections are refused at
once, a request in flight (its body still arriving) gets its whole answer, the last-used note
and the audit line of requests answered just before are written, and the process exits 0 — with
one worker and with uvicorn's supervisor over two. The control beside each: the same broker
killed (SIGKILL) instead loses the last-used note the shutdown would have flushed. Beside them,
a start that fails in the workers exits 3, not 0, as an orchestrator needs to see it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.iam.entities import ACCESS_KEY
from broker.runtime import open_entity_store
from broker.settings import load
from tests.e2e.support import BIN, BrokerProcess, clean_env
from tests.helpers import free_port

# Last-used notes are flushed hourly here: only the shutdown's flush can write them in time.
FLUSH_SECONDS = "3600"


class Node:
    """A data directory, its root keys (from broker init) and the environment to serve it."""

    def __init__(self, tmp_path: Path, **extra: str) -> None:
        self.dir = tmp_path
        self.audit = tmp_path / "audit.jsonl"
        self.env = clean_env(BROKER_SERVER_DATA_DIR=str(tmp_path / "data"),
                             BROKER_AUDIT_SINK="file", BROKER_AUDIT_PATH=str(self.audit),
                             BROKER_IAM_LAST_USED_FLUSH_SECONDS=FLUSH_SECONDS,
                             BROKER_SERVER_SHUTDOWN_TIMEOUT_SECONDS="20", **extra)
        init = subprocess.run([str(BIN / "broker"), "init", "--json"], env=self.env,
                              capture_output=True, text=True, timeout=60, check=True)
        root = json.loads(init.stdout)["root"]
        self.root = (root["access_key_id"], root["secret_access_key"])

    def serve(self, *args: str) -> BrokerProcess:
        port = free_port()
        return BrokerProcess(["--port", str(port), *args], self.env, port,
                             self.dir / f"serve-{port}.log")

    def client(self, broker: BrokerProcess, service: str,
               creds: tuple[str, str] | None = None) -> Any:
        key, secret = creds or self.root
        return boto3.client(service, endpoint_url=broker.url, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def slow_request(node: Node, broker: BrokerProcess) -> tuple[socket.socket, bytes]:
    """A signed GetCallerIdentity whose headers and first half of the body are sent: the
    server is mid-request, waiting for the rest (returned) to answer."""
    body = "Action=GetCallerIdentity&Version=2011-06-15&Padding=" + "x" * 64
    request = AWSRequest("POST", broker.url + "/", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(*node.root), "sts", "us-east-1").add_auth(request)
    head = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{broker.port}",
            f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=30)
    data = body.encode()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:40])
    return sock, data[40:]


def answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def refused(port: int, timeout: float = 15) -> bool:
    """Whether new connections to the port are refused within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def used_before_stopping(node: Node, broker: BrokerProcess) -> str:
    """The access key id of credentials issued just before the stop: the root key's use is
    noted by the process, not yet flushed (FLUSH_SECONDS)."""
    result = node.client(broker, "sts").get_session_token()
    return str(result["Credentials"]["AccessKeyId"])


def last_used(node: Node) -> Any:
    """The root key's last use as the store has it, read by this test process (another
    process than the broker's) after the broker has exited."""
    settings = load(None, environ=node.env)

    async def read() -> Any:
        store = open_entity_store(settings)
        try:
            return (await store.find(ACCESS_KEY, node.root[0])).data.get("last_used")
        finally:
            await store.close()

    return asyncio.run(read())


def stop(broker: BrokerProcess, how: Callable[[int, int], None], sig: int) -> int:
    how(broker.proc.pid, sig)
    try:
        return broker.proc.wait(timeout=60)
    finally:
        broker._log_file.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_requests_in_flight_flushes_and_exits_0(
        tmp_path: Path, workers: int, request: pytest.FixtureRequest) -> None:
    extra: dict[str, str] = {}
    if workers > 1:
        extra = {"BROKER_STORE_EPHEMERAL_URL": request.getfixturevalue("redis_url"),
                 "BROKER_STORE_REDIS_PREFIX": f"shutdown-{uuid.uuid4().hex[:8]}:"}
    node = Node(tmp_path, **extra)
    broker = node.serve("--workers", str(workers))
    issued = used_before_stopping(node, broker)
    sock, rest = slow_request(node, broker)
    time.sleep(0.5)  # the headers are read: the request is in flight
    os.kill(broker.proc.pid, signal.SIGTERM)  # the main process only, as Kubernetes does
    assert refused(broker.port), "new connections were still accepted after SIGTERM"
    sock.sendall(rest)
    reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert b"<GetCallerIdentityResponse" in reply and b"</GetCallerIdentityResponse>" in reply
    assert broker.proc.wait(timeout=60) == 0, broker.output()
    broker._log_file.close()
    # The audit line of credentials issued just before the signal, in CloudTrail's shape.
    [line] = [e for e in node.audit_lines()
              if e.get("responseElements", {}).get("credentials", {}).get("accessKeyId")
              == issued]
    assert (line["eventName"], line["eventSource"]) == ("GetSessionToken", "sts.amazonaws.com")
    # The root key's last use, noted by this process, reached the store at shutdown.
    used = last_used(node)
    assert used is not None and used["service"] == "sts", used


def test_sigkill_loses_the_last_used_note_the_shutdown_would_have_flushed(
        tmp_path: Path) -> None:
    """The control: the same node, killed instead of stopped. Nothing flushes the note."""
    node = Node(tmp_path)
    broker = node.serve()
    issued = used_before_stopping(node, broker)
    assert stop(broker, os.kill, signal.SIGKILL) == -signal.SIGKILL
    assert any(e.get("responseElements", {}).get("credentials", {}).get("accessKeyId")
               == issued for e in node.audit_lines())  # written at once
    assert last_used(node) is None


# A PostgreSQL nobody listens on: the keyring is there, so `serve` itself starts, and only the
# workers, opening the store, find it unreachable.
UNREACHABLE_DATABASE = "postgresql://127.0.0.1:1/broker"


def failed_start(node: Node, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A start the broker must give up: its status and output, once it has exited."""
    return subprocess.run(command, env={**node.env, **env}, capture_output=True, text=True,
                          timeout=120, check=False, cwd=str(node.dir))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_start_whose_workers_cannot_open_the_store_exits_3(
        tmp_path: Path, workers: int, request: pytest.FixtureRequest) -> None:
    """What Kubernetes and systemd see as a failed start (a crash-looping pod, a failed unit),
    with one worker or with uvicorn's supervisor over two, rather than a clean exit 0. The
    control is the SIGTERM test above: the same node, started well, stops with 0."""
    extra: dict[str, str] = {}
    if workers > 1:
        extra = {"BROKER_STORE_EPHEMERAL_URL": request.getfixturevalue("redis_url"),
                 "BROKER_STORE_REDIS_PREFIX": f"failed-{uuid.uuid4().hex[:8]}:"}
    node = Node(tmp_path, **extra)
    done = failed_start(node, [str(BIN / "broker"), "serve", "--port", str(free_port()),
                               "--workers", str(workers)],
                        BROKER_STORE_DATABASE_URL=UNREACHABLE_DATABASE)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "StoreUnavailable" in done.stderr and "Application startup failed" in done.stderr


# uvicorn's supervisor over two workers, as `broker serve --workers 2` runs it, started on its
# own so that the workers read settings `serve` would have refused before starting them.
SUPERVISOR = ("from broker.cli import _supervise; "
              "_supervise(2, {'host': '127.0.0.1', 'port': int(__import__('sys').argv[1])})")


def test_workers_refusing_their_settings_stop_the_supervisor_with_3(tmp_path: Path) -> None:
    """A worker that cannot build its app exits with uvicorn's startup-failure status, so the
    supervisor stops and exits 3, instead of starting the worker again and again."""
    node = Node(tmp_path)
    done = failed_start(node, [sys.executable, "-c", SUPERVISOR, str(free_port())],
                        BROKER_SERVER_WORKERS="2")  # and no shared ephemeral store
    assert done.returncode == 3, done.stdout + done.stderr
    assert "worker cannot start: setting server.workers" in done.stderr, done.stderr


def test_workers_with_their_settings_serve_under_the_supervisor_and_exit_0(
        tmp_path: Path, redis_url: str) -> None:
    """The control: the same supervisor, its workers given the shared store they need."""
    node = Node(tmp_path, BROKER_SERVER_WORKERS="2", BROKER_STORE_EPHEMERAL_URL=redis_url,
                BROKER_STORE_REDIS_PREFIX=f"supervised-{uuid.uuid4().hex[:8]}:")
    port = free_port()
    broker = BrokerProcess([str(port)], node.env, port, tmp_path / "supervisor.log",
                           command=[sys.executable, "-c", SUPERVISOR])
    assert node.client(broker, "sts").get_caller_identity()["Account"]
    assert stop(broker, os.kill, signal.SIGTERM) == 0, broker.output()
