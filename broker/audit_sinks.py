"""Where audit lines go: standard output, a file, or syslog (``audit.sink``).

- ``stdout``: one line per event, flushed (standard error from the command line, so that what
  a command prints stays exactly what it documents).
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
  again before the next line.

A line that cannot be written (the file's directory gone, a full disk) or queued (a receiver
that stopped reading, the queue full) is ``AuditUnavailable``: the request is refused with
ServiceUnavailable as when a store is down, never answered without its line. The file sink
tries its path again on every later line, so lines land again once it is writable.
"""

from __future__ import annotations

import contextlib
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


def request_reopen() -> None:
    """Ask every file sink of this process to open its path again before its next line (the
    SIGHUP handler of ``broker serve`` calls it: logrotate's ``postrotate``)."""
    _reopen[0] += 1


class StreamSink:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: AuditEvent) -> None:
        line = event.line() + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.flush()


class FileSink:
    def __init__(self, path: Path, *, check_seconds: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
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

    def emit(self, event: AuditEvent) -> None:
        data = (event.line() + "\n").encode()
        with self._lock:
            if self._closed:
                raise ValueError("the audit file is closed")
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
                log.error("audit line not written to %s: %s", self._path, exc.strerror or exc)
                raise AuditUnavailable(f"the audit file {self._path} cannot be written: "
                                       f"{exc.strerror or exc}") from exc

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
    """SysLogHandler with RFC 3164's TIMESTAMP (and HOSTNAME over the network), one logged
    complaint per failure instead of logging's traceback on standard error, and, over TCP, a
    connection opened again when the receiver closed it (the standard handler keeps writing to
    the dead socket, and every later line fails)."""

    def __init__(self, address: str | tuple[str, int], socktype: socket.SocketKind | None,
                 facility: int, network: bool) -> None:
        super().__init__(address, facility, socktype)
        # The base class's connection: None while there is none (it opens one when needed).
        self.socket: _Socket | None = getattr(self, "socket", None)
        self.append_nul = False
        self._host = (socket.gethostname().split(".")[0] or "-") + " " if network else ""
        self._tag = f"broker[{os.getpid()}]: "
        self._stream = self.socktype == socket.SOCK_STREAM
        self._tcp = self._stream and not self.unixsocket
        self.stopped = False  # set when the sink gave up on its writer: nothing more is sent

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        text = f"{stamp[:4]}{int(stamp[4:6]):>2}{stamp[6:]} {self._host}{self._tag}{record.msg}"
        return text + "\n" if self._stream else text  # RFC 6587's framing over TCP

    def emit(self, record: logging.LogRecord) -> None:
        if not self._tcp:
            super().emit(record)  # datagrams; a local stream socket is reconnected by it
            return
        priority = self.encodePriority(self.facility, self.mapPriority(record.levelname))
        data = f"<{priority}>{self.format(record)}".encode()
        for attempt in (1, 2):  # the connection as it is (or reopened), then once reopened
            if self.stopped:
                return
            try:
                sock = self.socket
                if sock is None or attempt == 2 or _closed_by_peer(sock):
                    sock = self._reconnect()
                sock.sendall(data)
                return
            except OSError:
                if attempt == 2:
                    self.handleError(record)

    def _reconnect(self) -> _Socket:
        old, self.socket = self.socket, None
        if old is not None:
            old.close()
        self.createSocket()  # raises when the receiver cannot be reached: the line fails
        return cast(_Socket, self.socket)  # set by createSocket

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
                 put_seconds: float = 5.0, close_seconds: float = 10.0) -> None:
        target, socktype, network = parse_syslog_address(address)
        try:
            self._handler = _SyslogHandler(
                target, socktype, logging.handlers.SysLogHandler.facility_names[facility],
                network)
        except OSError as exc:
            raise ConfigError(f"setting audit.syslog_address: cannot reach {address}: "
                              f"{exc.strerror or exc}") from None
        self._address = address
        self._put_seconds = put_seconds
        self._close_seconds = close_seconds
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._stalled = False  # a line timed out waiting for room; the queue is still full
        self._abandoned = False  # close gave up on the writer: it sends nothing more
        self._writer = threading.Thread(target=self._write, name="audit-syslog", daemon=True)
        self._writer.start()
        self._closed = False

    def emit(self, event: AuditEvent) -> None:
        if self._closed:
            raise ValueError("the audit sink is closed")
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
        while (line := self._queue.get()) is not None and not self._abandoned:
            try:
                self._handler.emit(logging.LogRecord("broker.audit", logging.INFO, "", 0, line,
                                                     None, None))
            except Exception:  # the writer lives on: a dead one would fill the queue
                log.exception("audit line not sent to syslog %s", self._address)

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
            # The queued lines, and the one the writer is stuck sending.
            unsent = self._queue.qsize() - stop_queued + 1
            log.error("audit: %d lines not sent to syslog %s before stopping (the receiver "
                      "did not take them in %g s)", unsent, self._address, self._close_seconds)
            sock = self._handler.socket
            if sock is not None:  # wakes a writer blocked in sendall
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
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
