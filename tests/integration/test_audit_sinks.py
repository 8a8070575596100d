"""The audit sinks under faults, with real sockets, files and a real broker: a TCP or local
syslog receiver that goes away makes the broker refuse requests until it is back, and then
gets the line kept meanwhile; one that stops reading makes the broker refuse requests (it
never answers without the line) and does not hang its shutdown; a pipe whose reader is gone
refuses the line (503, not 500); the line of a change made is written once more, and never
as a refusal; an audit file
whose directory is gone makes every interface (Query, JSON, the browser's pages, the access
portal's API) answer 503 in its own format, and lines land again once the path is writable;
a store that fails to close still lets the audit lines out; the file is created 0640. Each
fault has its control beside it, built the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
import httpx
import pytest

from broker.audit import AuditEvent
from broker.audit_sinks import (
    AuditUnavailable,
    FileSink,
    StreamSink,
    SyslogSink,
    request_reopen,
)
from broker.errors import ConfigError
from broker.runtime import initialize, open_runtime
from broker.settings import load
from tests.helpers import Broker, free_port, start_broker
from tests.sso_world import MovableClock, make_world

AT = datetime(2026, 12, 7, 20, 41, 9, tzinfo=UTC)


def _event(i: int, agent: str = "x") -> AuditEvent:
    return AuditEvent(time=AT, event="E", outcome="issued", request_id=str(i),
                      source_ip=None, user_agent=agent)


def _listener(port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the same port again
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # fills up soon
    server.bind(("127.0.0.1", port))
    server.listen()
    server.settimeout(10)
    return server


def _ids(conn: socket.socket, count: int) -> list[str]:
    """The request ids of the next ``count`` messages (one per line: RFC 6587 framing)."""
    conn.settimeout(10)
    data = b""
    while data.count(b"\n") < count:
        chunk = conn.recv(65536)
        assert chunk, "the connection ended early"
        data += chunk
    lines = data.decode().splitlines()
    return [json.loads(line.partition(": ")[2])["requestID"] for line in lines]


class _Seen(logging.Handler):
    """Sets ``event`` when broker.audit logs a line it could not send."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


@pytest.fixture
def seen() -> Iterator[_Seen]:
    handler = _Seen()
    logger = logging.getLogger("broker.audit")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _until(condition: Callable[[], bool], what: str) -> None:
    """Waits, for a bounded time, for what another thread or a socket will do (no duration is
    asserted: a slow machine only waits longer)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _refused(sink: SyslogSink, i: int) -> bool:
    try:
        sink.emit(_event(i))
    except AuditUnavailable:
        return True
    return False


def test_a_tcp_syslog_receiver_away_refuses_lines_and_gets_the_held_one_when_back(
        seen: _Seen) -> None:
    port = free_port()
    server = _listener(port)
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth", retry_max_seconds=0.5)
    try:
        conn, _ = server.accept()
        for i in range(3):
            sink.emit(_event(i))
        assert _ids(conn, 3) == ["0", "1", "2"]  # the control: lines before the restart
        conn.close()  # rsyslog stops: its port refuses connections...
        server.close()
        sink.emit(_event(3))  # ...so this line, queued (its request answered), finds nobody
        assert seen.event.wait(10)
        assert "kept and sent again" in seen.messages[-1]
        for i in (100, 101):  # while it is kept, new lines are refused (their requests 503)
            with pytest.raises(AuditUnavailable, match="cannot be sent to syslog"):
                sink.emit(_event(i))
        server = _listener(port)  # ...and starts again on the same port
        again, _ = server.accept()  # the sink opened a new connection for the kept line
        assert _ids(again, 1) == ["3"]
        _until(lambda: not _refused(sink, 102), "lines are accepted again")  # the control
        sink.emit(_event(5))  # and it keeps using the connection
        received = _ids(again, 2)
        assert received == ["102", "5"]  # what was refused never arrives, later lines do
        assert "again; requests are accepted" in seen.messages[-1]
        again.close()
    finally:
        sink.close()
        server.close()


def test_a_local_syslog_socket_away_refuses_lines_and_gets_the_held_one_when_back(
        tmp_path: Path) -> None:
    """journald or rsyslog restarting: /dev/log (here a datagram socket of the test's own)
    is gone for a while. The kept line is sent to the new socket at the same path."""
    path = str(tmp_path / "log")

    def receiver() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        return sock

    def request_id(sock: socket.socket) -> str:
        doc = json.loads(sock.recv(65536).decode().partition(": ")[2])
        return str(doc["requestID"])

    server = receiver()
    sink = SyslogSink(path, "auth", retry_max_seconds=0.5)
    try:
        sink.emit(_event(1))
        assert request_id(server) == "1"  # the control
        server.close()
        os.unlink(path)
        sink.emit(_event(2))  # queued: its send fails, and it is kept
        _until(lambda: sink.failing, "the send failed")
        with pytest.raises(AuditUnavailable, match="cannot be sent to syslog"):
            sink.emit(_event(100))  # refused while the socket is gone
        server = receiver()
        assert request_id(server) == "2"
        _until(lambda: not _refused(sink, 3), "lines are accepted again")
        assert request_id(server) == "3"
    finally:
        sink.close()
        server.close()


def test_a_local_syslog_socket_missing_at_start_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.syslog_address"):
        SyslogSink(str(tmp_path / "no-such-socket"), "auth")


def test_closing_a_sink_whose_receiver_is_away_is_bounded(seen: _Seen) -> None:
    port = free_port()
    server = _listener(port)
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth", close_seconds=1)
    conn, _ = server.accept()
    conn.close()
    server.close()
    sink.emit(_event(1))  # kept, sent again and again while nobody listens
    _until(lambda: sink.failing, "the send failed")
    sink.close()  # gives up on the kept line after close_seconds
    assert any("1 lines not sent to syslog" in m and "before stopping" in m
               for m in seen.messages), seen.messages
    with pytest.raises(AuditUnavailable, match="closed"):
        sink.emit(_event(2))


@pytest.mark.parametrize("fault", ["open", "reader gone", "closed"])
def test_a_stream_that_cannot_be_written_refuses_the_line(fault: str) -> None:
    """Standard output piped to a log shipper that died (EPIPE), or a stream closed: the line
    is refused as an unwritable file's is, so the request is 503, not 500."""
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    reader = os.fdopen(read, "r")
    try:
        if fault == "reader gone":
            reader.close()
        elif fault == "closed":
            stream.close()
        sink = StreamSink(stream)
        if fault == "open":  # the control: the same pipe, read
            sink.emit(_event(1))
            assert json.loads(reader.readline())["requestID"] == "1"
        else:
            with pytest.raises(AuditUnavailable, match="cannot be written"):
                sink.emit(_event(1))
        sink.close()  # whatever became of the stream
    finally:
        for end in (stream, reader):
            with contextlib.suppress(OSError):
                end.close()


def test_a_closed_file_sink_refuses_the_line(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.log")
    sink.emit(_event(1))  # the control
    sink.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        sink.emit(_event(2))
    assert [json.loads(x)["requestID"] for x in
            (tmp_path / "audit.log").read_text().splitlines()] == ["1"]


def test_a_restart_between_two_lines_loses_neither() -> None:
    """A receiver that closed the connection is seen before the next line is sent: the line
    goes to the new connection, not into the old one that only a later send finds dead."""
    port = free_port()
    server = _listener(port)
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth")
    try:
        conn, _ = server.accept()
        sink.emit(_event(1))
        assert _ids(conn, 1) == ["1"]
        conn.close()
        server.close()
        server = _listener(port)
        sink.emit(_event(2))
        again, _ = server.accept()
        assert _ids(again, 1) == ["2"]
        again.close()
    finally:
        sink.close()
        server.close()


def _stuck_or_reading(read: bool) -> tuple[socket.socket, list[bytes], threading.Thread,
                                            list[socket.socket]]:
    """A receiver on a fresh port that reads everything (read=True), or accepts and then
    never reads (the control is the same receiver, reading)."""
    server = _listener(0)
    received: list[bytes] = []
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        if not read:
            held.append(conn)  # accepted; keeps the connection open, reads nothing
            return
        conn.settimeout(30)
        while chunk := conn.recv(1 << 20):
            received.append(chunk)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, received, thread, held


@pytest.mark.parametrize("read", [True, False], ids=["reading", "stopped-reading"])
def test_a_receiver_that_stops_reading_refuses_lines_and_does_not_hang_close(
        read: bool, seen: _Seen) -> None:
    server, received, thread, held = _stuck_or_reading(read)
    port = server.getsockname()[1]
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth", queue_size=4, put_seconds=2,
                      close_seconds=3)
    big = "x" * 65536
    refused = 0
    try:
        # More than the kernel's socket buffers and the queue can hold together.
        for i in range(200):
            try:
                sink.emit(_event(i, big))
            except AuditUnavailable:
                refused += 1
        sink.close()  # returns, whether the receiver reads or not
        thread.join(timeout=30)
    finally:
        for conn in held:
            conn.close()
        server.close()
    if read:  # the control: every line sent, none refused
        assert refused == 0
        lines = b"".join(received).decode().splitlines()
        assert [json.loads(x.partition(": ")[2])["requestID"] for x in lines] == \
            [str(i) for i in range(200)]
    else:
        assert refused > 0
        assert any("lines not sent to syslog" in m and "before stopping" in m
                   for m in seen.messages), seen.messages
    with pytest.raises(AuditUnavailable, match="closed"):
        sink.emit(_event(0))


def test_the_file_sink_tries_its_path_again_after_a_failed_reopen(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    path = logs / "audit.log"
    sink = FileSink(path, check_seconds=3600)
    sink.emit(_event(1))  # the control
    shutil.rmtree(logs)
    logs.write_text("a file where the directory was")  # root's chmod would not stop root
    request_reopen()
    for i in (2, 3):  # refused, each time: no answer is given without its line
        with pytest.raises(AuditUnavailable, match="cannot be written"):
            sink.emit(_event(i))
    logs.unlink()
    logs.mkdir()
    sink.emit(_event(4))  # writable again: the line lands, without a signal
    sink.close()
    assert [json.loads(x)["requestID"] for x in path.read_text().splitlines()] == ["4"]


def test_the_audit_file_is_created_0640_and_an_existing_file_keeps_its_mode(
        tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        FileSink(tmp_path / "new.log").close()
        kept = tmp_path / "kept.log"
        kept.write_text("")
        kept.chmod(0o600)
        FileSink(kept).close()  # the control: a file logrotate made keeps its mode
    finally:
        os.umask(old)
    assert (tmp_path / "new.log").stat().st_mode & 0o777 == 0o640
    assert kept.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(tmp_path / "d", env={"BROKER_AUDIT_PATH": str(tmp_path / "logs" /
                                                                   "audit.log")})
    try:
        yield b
    finally:
        b.stop()


def _code(caught: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, int]:
    response: dict[str, Any] = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _sign_in(broker: Broker) -> httpx.Response:
    with httpx.Client(base_url=broker.url) as client:
        page = client.get("/signin")
        assert page.status_code == 200  # a page that writes no line is served regardless
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        return client.post("/signin", data={"csrf": csrf.group(1), "kind": "iam",
                                            "account": broker.account_id,
                                            "username": "nobody", "password": "wrong"})


def test_an_audit_file_that_cannot_be_written_refuses_requests_in_each_format(
        broker: Broker) -> None:
    path = Path(broker.settings.audit.path)
    sts, orgs = broker.client("sts"), broker.client("organizations")
    before = sts.get_session_token()  # the control, before
    assert before["ResponseMetadata"]["RequestId"] in path.read_text()
    federated = sts.get_federation_token(Name="audited")["Credentials"]
    session = json.dumps({"sessionId": federated["AccessKeyId"],
                          "sessionKey": federated["SecretAccessKey"],
                          "sessionToken": federated["SessionToken"]})

    def signin_token() -> httpx.Response:
        return httpx.get(f"{broker.url}/federation",
                         params={"Action": "getSigninToken", "Session": session})

    assert signin_token().status_code == 200  # the control, before
    kept = signin_token().json()["SigninToken"]  # to sign in with during the outage

    def login(token: str) -> httpx.Response:
        return httpx.get(f"{broker.url}/federation", params={
            "Action": "login", "SigninToken": token, "Destination": f"{broker.url}/console"})

    shutil.rmtree(path.parent)
    path.parent.write_text("a file where the directory was")
    request_reopen()  # logrotate's SIGHUP: the path is opened again, and that fails

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sts.get_session_token()  # credentials are never answered without their line
    assert _code(caught) == ("ServiceUnavailable", 503)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        orgs.create_organization(FeatureSet="ALL")
    assert _code(caught) == ("ServiceUnavailableException", 503)
    refused = signin_token()  # the federation endpoint's own JSON
    assert refused.status_code == 503
    assert refused.json()["Error"]["Code"] == "ServiceUnavailable"
    page = _sign_in(broker)  # a refused sign-in's line cannot be written either
    assert page.status_code == 503
    assert "text/html" in page.headers["content-type"] and "ServiceUnavailable" in page.text
    assert login(kept).status_code == 503  # refused before the token is spent

    path.parent.unlink()
    path.parent.mkdir()  # writable again: lines land again, with no signal
    after = sts.get_session_token()
    assert signin_token().status_code == 200
    # Refused before it acted (the sink's last line had failed, its path could not be
    # opened): nothing was made then, so it is made now, once.
    assert orgs.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    assert _sign_in(broker).status_code == 403  # refused, as it should be: not an outage
    assert login(kept).status_code == 303  # the token was not spent by the refused login
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert after["ResponseMetadata"]["RequestId"] in {d["requestID"] for d in docs}
    assert [d["eventName"] for d in docs] == ["GetSessionToken", "GetSigninToken",
                                              "CreateOrganization", "ConsoleLogin",
                                              "ConsoleLogin"]


def test_a_store_that_fails_to_close_still_lets_the_audit_lines_out(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(tmp_path / "d"),
                                   "BROKER_AUDIT_SINK": "syslog",
                                   "BROKER_AUDIT_SYSLOG_ADDRESS": f"udp://127.0.0.1:{port}"})
    asyncio.run(initialize(settings))
    assert "CreateAccessKey" in receiver.recv(65536).decode()  # init's line

    async def run(fail: bool) -> None:
        runtime = await open_runtime(settings)
        if fail:
            close = runtime.store.close

            async def broken() -> None:
                await close()
                raise RuntimeError("the store did not close")
            runtime.store.close = broken  # type: ignore[method-assign]
        runtime.audit.emit(_event(1 if fail else 2))
        if fail:
            with pytest.raises(RuntimeError, match="did not close"):
                await runtime.close()
        else:
            await runtime.close()  # the control: a clean close
        with pytest.raises(AuditUnavailable, match="closed"):
            runtime.audit.emit(_event(0))  # closed all the same

    try:
        for fail in (True, False):
            asyncio.run(run(fail))
            message = receiver.recv(65536).decode()
            assert json.loads(message.partition(": ")[2])["requestID"] == ("1" if fail else "2")
    finally:
        receiver.close()


def test_the_access_portal_api_refuses_credentials_without_their_line(tmp_path: Path) -> None:
    clock = MovableClock()
    logs = tmp_path / "logs"
    broker = start_broker(tmp_path / "d", clock=clock,
                          env={"BROKER_AUDIT_PATH": str(logs / "audit.log")})
    try:
        world = make_world(broker, clock)
        _, tokens = world.device_tokens(world.one)
        # Not the world's strict client: the 503 is a store outage's (InternalServerException),
        # which the model does not list for GetRoleCredentials.
        sso = boto3.client("sso", endpoint_url=broker.url, region_name="us-east-1",
                           config=botocore.config.Config(
                               signature_version=botocore.UNSIGNED,
                               retries={"max_attempts": 1, "mode": "standard"}))
        asked = {"accessToken": tokens["accessToken"], "accountId": world.one.account_id,
                 "roleName": "ReadOnly"}
        shutil.rmtree(logs)
        logs.write_text("a file where the directory was")
        request_reopen()
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            sso.get_role_credentials(**asked)
        assert _code(caught) == ("InternalServerException", 503)
        logs.unlink()
        logs.mkdir()
        issued = sso.get_role_credentials(**asked)["roleCredentials"]  # the control
        docs = [json.loads(x) for x in (logs / "audit.log").read_text().splitlines()]
        assert [d["additionalEventData"]["IssuedAccessKeyId"] for d in docs
                if d["eventName"] == "GetRoleCredentials"] == [issued["accessKeyId"]]
    finally:
        broker.stop()


class _Receiver:
    """A TCP syslog receiver on ``port`` that takes every line on every connection, in
    threads, until ``stop``: then its port refuses connections, as a stopped rsyslog's does."""

    def __init__(self, port: int) -> None:
        self.server = _listener(port)
        self.server.settimeout(0.05)  # accept() looks at ``stopped`` between waits
        self.lines: list[str] = []
        self.conns: list[socket.socket] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()
        self.server.close()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                data += chunk
                *whole, data = data.split(b"\n")
                self.lines += [x.decode() for x in whole]

    def ids(self) -> list[str]:
        return [json.loads(x.partition(": ")[2])["requestID"] for x in self.lines]

    def stop(self) -> None:
        self.stopped = True
        self.thread.join(timeout=10)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def test_a_broker_whose_tcp_syslog_receiver_is_away_refuses_requests_until_it_is_back(
        tmp_path: Path) -> None:
    port = free_port()
    receiver = _Receiver(port)
    broker = start_broker(tmp_path / "d", env={
        "BROKER_AUDIT_SINK": "syslog", "BROKER_AUDIT_SYSLOG_ADDRESS": f"tcp://127.0.0.1:{port}"})
    sts = broker.client("sts")
    answered: list[str] = []
    refused = 0

    def ask() -> bool:
        """One request: True when answered (its id noted), False when refused with 503."""
        nonlocal refused
        try:
            answered.append(sts.get_session_token()["ResponseMetadata"]["RequestId"])
        except botocore.exceptions.ClientError as exc:
            response: dict[str, Any] = exc.response  # type: ignore[assignment]
            assert (response["Error"]["Code"],
                    response["ResponseMetadata"]["HTTPStatusCode"]) == ("ServiceUnavailable", 503)
            refused += 1
            return False
        return True

    try:
        assert ask()  # the control: answered, and its line arrives
        _until(lambda: answered[0] in receiver.ids(), "the line arrived")
        receiver.stop()  # rsyslog stops: its port refuses connections
        _until(lambda: not ask(), "requests are refused while the receiver is away")
        assert not ask()  # and stay refused
        receiver = _Receiver(port)  # started again on the same port
        _until(ask, "requests are answered again")
        assert ask()
        # Every request answered has its line on record, those answered just before the
        # outage was found included (they were kept, and sent once the receiver was back).
        _until(lambda: set(answered[1:]) <= set(receiver.ids()),
               "every answered request's line arrived")
        assert refused >= 2
    finally:
        broker.stop()
        receiver.stop()


@pytest.mark.parametrize("interface", ["query", "json"])
@pytest.mark.parametrize("failures", [0, 1, 2], ids=["writable", "fails-once", "fails-twice"])
def test_the_line_of_a_change_made_is_written_once_more_and_never_as_refused(
        broker: Broker, interface: str, failures: int) -> None:
    """The line of credentials issued or a change made fails ``failures`` times (the real
    file sink behind it). Once is written again: the request is answered, its line on record
    once. Twice is 503, and no line is written for it: not a refusal's, which would record as
    refused what was done (refusals' lines are let through here, to show there are none)."""
    sink = broker.runtime.audit
    write = sink.emit
    left = [failures]

    def flaky(event: AuditEvent) -> None:
        if event.error_code is None and event.event in ("GetSessionToken",
                                                        "CreateOrganization") and left[0]:
            left[0] -= 1
            raise AuditUnavailable("the audit file cannot be written: injected")
        write(event)

    sink.emit = flaky  # type: ignore[method-assign]
    service, ask, want = (("sts", "get_session_token", "ServiceUnavailable")
                          if interface == "query" else
                          ("organizations", "create_organization", "ServiceUnavailableException"))
    client = boto3.client(  # asks once: botocore's one retry of a 503 would be a new request
        service, endpoint_url=broker.url, region_name="us-east-1",
        aws_access_key_id=broker.root.access_key_id,
        aws_secret_access_key=broker.root.secret_access_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    request_id = None
    try:
        answer = getattr(client, ask)()
        request_id = answer["ResponseMetadata"]["RequestId"]
    except botocore.exceptions.ClientError as exc:
        response: dict[str, Any] = exc.response  # type: ignore[assignment]
        assert failures == 2
        assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) \
            == (want, 503)
        request_id = response["ResponseMetadata"]["RequestId"]
    assert request_id
    docs = [json.loads(x) for x in Path(broker.settings.audit.path).read_text().splitlines()]
    mine = [d for d in docs if d["requestID"] == request_id]
    if failures < 2:
        assert len(mine) == 1 and "errorCode" not in mine[0], mine
    else:
        assert mine == []
        if interface == "json":  # made before its 503: a retry sees it made
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                client.create_organization(FeatureSet="ALL")
            assert _code(caught)[0] == "AlreadyInOrganizationException"


@pytest.mark.parametrize("away", [False, True], ids=["receiver-up", "receiver-away"])
def test_a_change_asked_while_the_syslog_receiver_is_away_is_refused_before_it_acts(
        tmp_path: Path, away: bool) -> None:
    """A sink known to be failing refuses a change before its handler runs: CreateUser is
    answered 503 and the user is not made (botocore's retries of the 503 would otherwise make
    the change again and again with no line). The control, the receiver up: the same request
    makes the user."""
    port = free_port()
    receiver = _Receiver(port)
    broker = start_broker(tmp_path / "d", env={
        "BROKER_AUDIT_SINK": "syslog", "BROKER_AUDIT_SYSLOG_ADDRESS": f"tcp://127.0.0.1:{port}"})
    sink = broker.runtime.audit
    assert isinstance(sink, SyslogSink)
    iam, sts = broker.client("iam"), broker.client("sts")
    name = f"u-{os.getpid()}"
    try:
        if away:
            receiver.stop()
            sts.get_session_token()  # answered: its line is kept, and its send fails
            _until(lambda: sink.failing, "the sink found the receiver away")
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                iam.create_user(UserName=name)
            assert _code(caught) == ("ServiceUnavailable", 503)
            receiver = _Receiver(port)  # back: the kept line goes, requests are accepted
            _until(lambda: not sink.failing, "the sink sent the kept line")
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                iam.get_user(UserName=name)
            assert _code(caught) == ("NoSuchEntity", 404)
        else:
            iam.create_user(UserName=name)
            assert iam.get_user(UserName=name)["User"]["UserName"] == name
    finally:
        broker.stop()
        receiver.stop()


def test_a_stream_that_failed_writes_no_line_twice_nor_the_refused_one_later(
        tmp_path: Path) -> None:
    """Standard output that fails (here /dev/full behind its descriptor) and then recovers
    (the pipe put back with dup2): the refused line never lands later, and no line lands
    twice — a buffered stream would keep the failed bytes and write them with the next line.
    The control is the first and last lines, written while the pipe is there."""
    read, write = os.pipe()
    stream = os.fdopen(os.dup(write), "w")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        sink = StreamSink(stream)
        sink.ready()
        sink.emit(_event(1))
        os.dup2(full, stream.fileno())  # the disk is full
        with pytest.raises(AuditUnavailable, match="cannot be written"):
            sink.emit(_event(2))
        with pytest.raises(AuditUnavailable):
            sink.ready()  # known to be failing: a change is refused before it acts
        os.dup2(write, stream.fileno())  # writable again
        sink.emit(_event(3))  # a refusal's line: it lands, and the sink is ready again
        sink.ready()
        sink.emit(_event(4))
        sink.close()
        stream.close()
        os.close(write)
        with os.fdopen(read) as reader:
            assert [json.loads(x)["requestID"] for x in reader.read().splitlines()] \
                == ["1", "3", "4"]
    finally:
        os.close(full)
        with contextlib.suppress(OSError):
            stream.close()


def test_a_stopped_syslog_writer_does_not_count_a_line_as_sent(seen: _Seen) -> None:
    """Once close gave up on the writer, a send reports failure rather than success: the
    writer logs no "sent again" for a line that never went."""
    port = free_port()
    server = _listener(port)
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth", close_seconds=0.5)
    try:
        sink._handler.stopped = True
        with pytest.raises(OSError, match="stopped sending"):
            sink._handler.send("a line")
        sink._handler.stopped = False  # the control: the same handler sends
        sink._handler.send("a line")
    finally:
        sink.close()
        server.close()
    assert not any("again" in m for m in seen.messages), seen.messages


def test_a_receiver_that_drops_the_handshake_makes_the_sink_fail(tmp_path: Path) -> None:
    """A receiver that answers no SYN (a full accept queue drops them, as a firewall or a
    vanished host does): the connect gives up after connect_seconds, so the sink is failing
    and refuses requests, where the kernel's own retries would take minutes. The control: a
    receiver that takes the connection, and the line arrives."""
    port = free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(0)
    server.settimeout(10)
    fillers: list[socket.socket] = []
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", "auth", connect_seconds=0.5,
                      close_seconds=0.5)
    try:
        conn, _ = server.accept()
        sink.emit(_event(1))
        assert _ids(conn, 1) == ["1"]  # the control
        conn.close()  # the receiver closes it: the next line opens a new connection
        for _ in range(4):  # fill the accept queue: later handshakes are not answered
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        sink.emit(_event(2))
        _until(lambda: sink.failing, "the connect gave up")  # bounded, not timed
        with pytest.raises(AuditUnavailable):
            sink.ready()
    finally:
        sink.close()
        for filler in fillers:
            filler.close()
        server.close()
