"""Where audit lines go: standard output, a file, or syslog (``audit.sink``).

- ``stdout``: one line per event, written to the descriptor with write(2) as the file sink
  writes (standard error from the command line, so that what a command prints stays exactly
  what it documents): nothing of a failed line stays buffered to land with a later one.
- ``file``: each line is one write(2) to ``audit.path`` opened for appending, without the text
  and buffer layers of a Python file object: whole lines, in order, even when several worker
  processes append to the same file, written before the answer is sent. The file is opened
  again when it was moved or removed (logrotate's default ``create`` mode: looked at before a
  line at most once a second, as logging's WatchedFileHandler does before every line) and on
  SIGHUP (``request_reopen``). It is created 0640: its lines name principals and addresses.
- ``syslog``: RFC 3164 messages (``<PRI>TIMESTAMP [HOST] broker[PID]: LINE``) through the
  standard library's SysLogHandler to ``audit.syslog_address`` — a local socket (``/dev/log``)
  or ``udp://HOST:PORT`` / ``tcp://HOST:PORT`` — from a writer thread behind a bounded queue,
  so that a slow receiver does not hold up the event loop; ``close`` sends what is queued, for
  a bounded time. Over TCP a connection the receiver closed (a restarted rsyslog) is opened
  again before the next line. Over TCP and a local socket a line whose send failed is kept
  and sent again (after 0.2 s, doubling to 5 s) until it goes or the sink closes; meanwhile
  the sink is *failing* and refuses every new line. Over UDP a lost line cannot be known.

A line that cannot be written (the file's directory gone, a full disk, a closed stream, a log
shipper gone from the pipe) or queued (a receiver that stopped reading, the queue full, a
receiver that refuses connections) is ``AuditUnavailable``: the request is refused with
ServiceUnavailable as when a store is down, never answered without its line. The file sink
tries its path again on every later line, so lines land again once it is writable.

A sink known to be down (syslog failing or its queue stalled, the last line to a file or a
stream failed, closed) says so in ``ready``, which the Query and JSON protocols call before a
request that writes a line acts: the request is refused before anything is done, rather than
done and then answered 503 (which botocore retries, making the change again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast
from urllib.parse import urlsplit

from broker.audit import AuditEvent, AuditSink
from broker.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from broker.settings import AuditSettings

log = logging.getLogger("broker.audit")

_reopen = [0]  # SIGHUP's count: process-wide, as the signal is (request_reopen)


class AuditUnavailable(StoreUnavailable):
    """An audit line that could not be written or queued. A StoreUnavailable, since the audit
    log is where the broker keeps its record of what it issued: every interface already
    refuses a request whose store is down with ServiceUnavailable, in its own format."""


class SinkClosed(AuditUnavailable, ValueError):
    """A line given to a sink after ``close``: refused as any line that cannot be written, and
    a ValueError, as a write to a closed file is."""


def emit_done(sink: AuditSink, event: AuditEvent) -> None:
    """The line of something done (credentials issued, a change made), written once more when
    it could not be: a passing fault (a file reopened, a receiver back) costs no answer. Raises
    the second StoreUnavailable; the caller then answers ServiceUnavailable and writes no other
    line, since a refusal's line would record as refused what was done."""
    try:
        sink.emit(event)
    except StoreUnavailable as exc:
        log.error("request %s: %s; its %s line is written once more", event.request_id, exc,
                  event.event)
        try:
            sink.emit(event)
        except StoreUnavailable as again:
            log.error("request %s: %s; answered ServiceUnavailable: what its %s did is not on "
                      "record", event.request_id, again, event.event)
            raise


def request_reopen() -> None:
    """Ask every file sink of this process to open its path again before its next line (the
    SIGHUP handler of ``broker serve`` calls it: logrotate's ``postrotate``)."""
    _reopen[0] += 1


class StreamSink:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._failed = False  # the last line could not be written

    def ready(self) -> None:
        # A line that failed leaves the sink refusing until one is written again: the line of
        # the request refused here (a refusal's) is the one that tries.
        if self._failed or getattr(self._stream, "closed", False):
            raise AuditUnavailable("the audit stream cannot be written: its last line failed")

    def emit(self, event: AuditEvent) -> None:
        line = event.line() + "\n"
        with self._lock:
            try:
                self._write(line)
            except (OSError, ValueError) as exc:
                # A log shipper gone from the pipe (EPIPE), a full disk under a redirection, a
                # stream closed: the line is not on record, so the request is not answered.
                self._failed = True
                log.error("audit line not written to standard output: %s", exc)
                raise AuditUnavailable(f"the audit stream cannot be written: {exc}") from exc
            self._failed = False

    def _write(self, line: str) -> None:
        # Straight to the descriptor, as the file sink writes: a buffered stream keeps the
        # bytes of a failed flush and writes them with the next line, so a refused request's
        # line would land after all, and a line could land twice. A stream with no descriptor
        # (a test's capture) is written through its own layers.
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError, AttributeError):
            fd = -1
        if fd < 0:
            self._stream.write(line)
            self._stream.flush()
            return
        data = line.encode()
        written = os.write(fd, data)
        while written < len(data):  # a short write (a pipe nearly full): the rest
            written += os.write(fd, data[written:])

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # nothing left to refuse
            self._stream.flush()

class FileSink:
    def __init__(self, path: Path, *, check_seconds: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        self._failed = False  # the last line could not be written
        try:
            self._open()
        except OSError as exc:
            raise ConfigError(f"setting audit.path: cannot open {path}: "
                              f"{exc.strerror or exc}") from None

    def _open(self) -> None:
        # 0640 (less the umask): the lines name principals and where they came from.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        found = os.fstat(fd)
        self._fd = fd
        self._identity = (found.st_dev, found.st_ino)
        self._generation = _reopen[0]
        self._checked = time.monotonic()

    def _moved(self) -> bool:
        if self._generation != _reopen[0]:
            return True
        # Looked at most once a second (a stat per line costs more than the write): lines
        # written in the second after a move still land, whole, in the moved file.
        now = time.monotonic()
        if now < self._checked + self._check_seconds:
            return False
        self._checked = now
        try:
            found = os.stat(self._path)
        except OSError:  # gone, or its directory gone or replaced: open the path again
            return True
        return (found.st_dev, found.st_ino) != self._identity

    def ready(self) -> None:
        """Refuses when closed, or when the last line failed and the path still cannot be
        opened (its directory gone, no permission). A disk that filled up is found only by
        the next write."""
        with self._lock:
            if self._closed:
                raise SinkClosed("the audit file is closed")
            if not self._failed:
                return
            try:
                self._reopen()
            except OSError as exc:
                raise AuditUnavailable(f"the audit file {self._path} cannot be written: "
                                       f"{exc.strerror or exc}") from exc

    def emit(self, event: AuditEvent) -> None:
        data = (event.line() + "\n").encode()
        with self._lock:
            if self._closed:
                raise SinkClosed("the audit file is closed")
            try:
                if self._fd is None or self._moved():
                    self._reopen()
                assert self._fd is not None
                written = os.write(self._fd, data)
                while written < len(data):  # a short write (rare): the rest, until all is
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                # No descriptor is kept when the path cannot be opened: the next line tries
                # the path again, so lines land again once it is writable.
                self._failed = True
                log.error("audit line not written to %s: %s", self._path, exc.strerror or exc)
                raise AuditUnavailable(f"the audit file {self._path} cannot be written: "
                                       f"{exc.strerror or exc}") from exc
            self._failed = False

    def _reopen(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):  # the lines written to it are kept or not
                os.close(fd)
        self._open()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


_Socket = socket.socket


class _SyslogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler with RFC 3164's TIMESTAMP (and HOSTNAME over the network), a ``send`` that
    raises when a line could not be sent over TCP or a local socket (the writer keeps the line
    and tries again), and a connection opened again when the receiver closed it (the standard
    handler keeps writing to a dead TCP socket, and every later line fails)."""

    def __init__(self, address: str | tuple[str, int], socktype: socket.SocketKind | None,
                 facility: int, network: bool, connect_seconds: float = 5.0) -> None:
        self._connect_seconds = connect_seconds  # before the base class connects
        super().__init__(address, facility, socktype)
        # The base class's connection: None while there is none (it opens one when needed).
        self.socket: _Socket | None = getattr(self, "socket", None)
        self.append_nul = False
        self._host = (socket.gethostname().split(".")[0] or "-") + " " if network else ""
        self._tag = f"broker[{os.getpid()}]: "
        self._udp = not self.unixsocket and self.socktype == socket.SOCK_DGRAM
        self.stopped = False  # set when the sink gave up on its writer: nothing more is sent
        if self.unixsocket:
            # The base class ignores a local socket it cannot connect to; a sink without its
            # receiver stops the start instead, naming the setting (raises OSError).
            self._reconnect()

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        text = f"{stamp[:4]}{int(stamp[4:6]):>2}{stamp[6:]} {self._host}{self._tag}{record.msg}"
        # RFC 6587's framing on a stream (TCP, or a local socket that is one).
        return text + "\n" if self.socktype == socket.SOCK_STREAM else text

    def send(self, line: str) -> None:
        """Send one line: on the connection as it is (or reopened when the receiver closed
        it), then once more on a new one. Raises OSError when both failed. Over UDP a failed
        send is logged and the line dropped: a datagram that never arrived is not known
        either, so keeping the ones that fail at once would promise what UDP cannot keep."""
        record = logging.LogRecord("broker.audit", logging.INFO, "", 0, line, None, None)
        priority = self.encodePriority(self.facility, self.mapPriority(record.levelname))
        if self._udp:
            try:
                if self.socket is None:
                    self.createSocket()
                cast(_Socket, self.socket).sendto(f"<{priority}>{self.format(record)}".encode(),
                                                  self.address)
            except OSError:
                self.handleError(record)
            return
        for attempt in (1, 2):
            if self.stopped:  # not sent: the writer must not count it as sent
                raise OSError(errno.ESHUTDOWN, "the audit sink stopped sending")
            try:
                sock = self.socket
                if sock is None or attempt == 2 or (self.socktype == socket.SOCK_STREAM
                                                    and _closed_by_peer(sock)):
                    sock = self._reconnect()
                # Formatted once connected: a local socket's type (its framing) is known then.
                sock.sendall(f"<{priority}>{self.format(record)}".encode())
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # a datagram too long: no retry can send it
                    self.handleError(record)
                    return
                if attempt == 2:
                    raise

    def createSocket(self) -> None:
        """The network connection, as the base class opens it but with a bounded connect: a
        receiver that drops the handshake (a firewall, a host gone) makes the line fail, and
        the sink *failing*, within ``connect_seconds`` rather than the kernel's minutes."""
        if isinstance(self.address, str) or self.socktype != socket.SOCK_STREAM:
            super().createSocket()  # a local socket, or UDP (which connects nothing)
            return
        self.unixsocket = False
        host, port = self.address
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        if not infos:
            raise OSError("getaddrinfo returns an empty list")
        fault: OSError | None = None
        for family, kind, proto, _, where in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self._connect_seconds)
            try:
                sock.connect(where)
            except OSError as exc:
                sock.close()
                fault = exc
                continue
            sock.settimeout(None)  # sends block, as before: close() wakes a stuck one
            self.socket = sock
            return
        assert fault is not None
        raise fault

    def _reconnect(self) -> _Socket:
        old, self.socket = self.socket, None
        if old is not None:
            old.close()
        if self.unixsocket:
            return self._connect_local()
        self.createSocket()  # raises when the receiver cannot be reached: the line fails
        return cast(_Socket, self.socket)  # set by createSocket

    def _connect_local(self) -> _Socket:
        """The local socket, a datagram one or else a stream (as the base class tries them,
        which ignores the failure: here it raises, and the line fails)."""
        kinds = [self.socktype] if self.socktype else [socket.SOCK_DGRAM, socket.SOCK_STREAM]
        for kind in kinds:
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.connect(cast(str, self.address))
            except OSError:
                sock.close()
                if kind == kinds[-1]:
                    raise
                continue
            self.socket, self.socktype = sock, kind
            break
        return cast(_Socket, self.socket)

    def handleError(self, record: logging.LogRecord) -> None:
        log.error("audit line not sent to syslog %s: %s", self.address, sys.exc_info()[1])


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the receiver closed the connection (or reset it). A syslog receiver never
    writes to it, so anything to read is its end of file: seen before a line is sent, the
    line goes to a new connection instead of into one that only the next send would find
    dead. A receiver that vanished without closing is found only by a failing send."""
    try:  # without select(): a descriptor past FD_SETSIZE is as good as any
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # nothing to read: still open
        return False
    except OSError:  # reset
        return True


class SyslogSink:
    _STOP = None

    def __init__(self, address: str, facility: str, *, queue_size: int = 10_000,
                 put_seconds: float = 5.0, close_seconds: float = 10.0,
                 retry_seconds: float = 0.2, retry_max_seconds: float = 5.0,
                 connect_seconds: float = 5.0) -> None:
        target, socktype, network = parse_syslog_address(address)
        try:
            self._handler = _SyslogHandler(
                target, socktype, logging.handlers.SysLogHandler.facility_names[facility],
                network, connect_seconds)
        except OSError as exc:
            raise ConfigError(f"setting audit.syslog_address: cannot reach {address}: "
                              f"{exc.strerror or exc}") from None
        self._address = address
        self._put_seconds = put_seconds
        self._close_seconds = close_seconds
        self._retry_seconds = retry_seconds
        self._retry_max_seconds = retry_max_seconds
        self._wake = threading.Event()  # ends a wait between two sends when close gives up
        self.failing = False  # a line's send failed and is tried again: new lines are refused
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._stalled = False  # a line timed out waiting for room; the queue is still full
        self._abandoned = False  # close gave up on the writer: it sends nothing more
        self._writer = threading.Thread(target=self._write, name="audit-syslog", daemon=True)
        self._writer.start()
        self._closed = False

    def ready(self) -> None:
        if self._closed:
            raise SinkClosed("the audit sink is closed")
        if self.failing:
            raise AuditUnavailable(f"the audit lines cannot be sent to syslog {self._address}")
        if self._stalled and self._queue.full():
            raise AuditUnavailable(f"the audit queue to syslog {self._address} is full")

    def emit(self, event: AuditEvent) -> None:
        if self._closed:
            raise SinkClosed("the audit sink is closed")
        if self.failing:
            raise AuditUnavailable(f"the audit lines cannot be sent to syslog {self._address}")
        line = event.line()
        # A full queue (a receiver that stopped reading) waits a few seconds for room rather
        # than drop the line, then refuses the request. It runs on the event loop: once one
        # line has waited in vain, the next ones are refused at once until there is room.
        try:
            if self._stalled:
                self._queue.put_nowait(line)
            else:
                self._queue.put(line, timeout=self._put_seconds)
        except queue.Full:
            if not self._stalled:
                log.error("audit lines not sent to syslog %s: %d queued, the receiver does not "
                          "take them; requests are refused", self._address,
                          self._queue.qsize())
            self._stalled = True
            raise AuditUnavailable(f"the audit queue to syslog {self._address} is full") from None
        self._stalled = False

    def _write(self) -> None:
        while (line := self._queue.get()) is not None and self._send(line):
            pass

    def _send(self, line: str) -> bool:
        """Send one line, again and again (0.2 s apart, doubling to 5 s) until it goes: its
        request was answered, so it is kept, and new lines are refused meanwhile (``failing``)
        rather than answered with nothing to show for them. False once close gave up."""
        delay = self._retry_seconds
        while not self._abandoned:
            try:
                self._handler.send(line)
            except OSError as exc:
                if not self.failing:
                    self.failing = True  # first: a line is refused once this is logged
                    log.error("audit line not sent to syslog %s: %s; it is kept and sent again, "
                              "and requests are refused until it is", self._address, exc)
                self._wake.wait(delay)
                delay = min(delay * 2, self._retry_max_seconds)
                continue
            except Exception:  # a line no send can take (a bug): the writer lives on
                log.exception("audit line not sent to syslog %s", self._address)
            if self.failing:
                log.warning("audit lines sent to syslog %s again; requests are accepted",
                            self._address)
                self.failing = False
            return True
        return False

    def close(self) -> None:
        """Send every queued line, for at most ``close_seconds``; then close the socket."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self._close_seconds
        stop_queued = True
        try:
            self._queue.put(self._STOP, timeout=self._close_seconds)
        except queue.Full:
            stop_queued = False
        self._writer.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._writer.is_alive():
            self._abandoned = self._handler.stopped = True
            self._wake.set()
            # The queued lines, and the one the writer is stuck sending.
            unsent = self._queue.qsize() - stop_queued + 1
            log.error("audit: %d lines not sent to syslog %s before stopping (the receiver "
                      "did not take them in %g s)", unsent, self._address, self._close_seconds)
            sock = self._handler.socket
            if sock is not None:  # wakes a writer blocked in sendall
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._writer.join(timeout=1.0)  # woken: it sends nothing more, and returns
        self._handler.close()


def parse_syslog_address(address: str
                         ) -> tuple[str | tuple[str, int], socket.SocketKind | None, bool]:
    """(SysLogHandler's address, socket type, over the network) of ``audit.syslog_address``."""
    if address.startswith(("udp://", "tcp://")):
        parts = urlsplit(address)
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError("must be udp://HOST:PORT, tcp://HOST:PORT or a socket path")
        port = parts.port or 514
        kind = socket.SOCK_DGRAM if parts.scheme == "udp" else socket.SOCK_STREAM
        return (parts.hostname, port), kind, True
    if not address.startswith("/"):
        raise ValueError("must be udp://HOST:PORT, tcp://HOST:PORT or a socket path (/dev/log)")
    return address, None, False  # a local socket: datagram, else stream (SysLogHandler tries)


def open_sink(settings: AuditSettings, *, command_line: bool = False) -> AuditSink:
    """The configured sink. From the command line, "stdout" means standard error."""
    if settings.sink == "file":
        return FileSink(Path(settings.path))
    if settings.sink == "syslog":
        return SyslogSink(settings.syslog_address, settings.syslog_facility)
    return StreamSink(sys.stderr if command_line else sys.stdout)
