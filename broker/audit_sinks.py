"""Where audit lines go: standard output, a file, or syslog (``audit.sink``).

- ``stdout``: one line per event, flushed (standard error from the command line, so that what
  a command prints stays exactly what it documents).
- ``file``: each line is one write(2) to ``audit.path`` opened for appending, without the text
  and buffer layers of a Python file object: whole lines, in order, even when several worker
  processes append to the same file, written before the answer is sent. The file is opened
  again when it was moved or removed (logrotate's default ``create`` mode: looked at before a
  line at most once a second, as logging's WatchedFileHandler does before every line) and on
  SIGHUP (``request_reopen``).
- ``syslog``: RFC 3164 messages (``<PRI>TIMESTAMP [HOST] broker[PID]: LINE``) through the
  standard library's SysLogHandler to ``audit.syslog_address`` — a local socket (``/dev/log``)
  or ``udp://HOST:PORT`` / ``tcp://HOST:PORT`` — from a writer thread behind a bounded queue,
  so that a slow receiver does not hold up the event loop; ``close`` sends what is queued.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from broker.audit import AuditEvent, AuditSink
from broker.errors import ConfigError

if TYPE_CHECKING:
    from broker.settings import AuditSettings

log = logging.getLogger("broker.audit")

_reopen = [0]  # SIGHUP's count: process-wide, as the signal is (request_reopen)


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
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o666)
        found = os.fstat(self._fd)
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
        except FileNotFoundError:
            return True
        return (found.st_dev, found.st_ino) != self._identity

    def emit(self, event: AuditEvent) -> None:
        data = (event.line() + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise ValueError("the audit file is closed")
            if self._moved():
                os.close(self._fd)
                self._fd = None
                self._open()
                assert self._fd is not None
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (rare): the rest, until all is written
                written += os.write(self._fd, data[written:])

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _SyslogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler with RFC 3164's TIMESTAMP (and HOSTNAME over the network), and one
    logged complaint per failure instead of logging's traceback on standard error."""

    def __init__(self, address: str | tuple[str, int], socktype: socket.SocketKind | None,
                 facility: int, network: bool) -> None:
        super().__init__(address, facility, socktype)
        self.append_nul = False
        self._host = (socket.gethostname().split(".")[0] or "-") + " " if network else ""
        self._tag = f"broker[{os.getpid()}]: "
        self._stream = self.socktype == socket.SOCK_STREAM

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        text = f"{stamp[:4]}{int(stamp[4:6]):>2}{stamp[6:]} {self._host}{self._tag}{record.msg}"
        return text + "\n" if self._stream else text  # RFC 6587's framing over TCP

    def handleError(self, record: logging.LogRecord) -> None:
        log.error("audit line not sent to syslog %s: %s", self.address, sys.exc_info()[1])


class SyslogSink:
    _STOP = None

    def __init__(self, address: str, facility: str) -> None:
        target, socktype, network = parse_syslog_address(address)
        try:
            self._handler = _SyslogHandler(
                target, socktype, logging.handlers.SysLogHandler.facility_names[facility],
                network)
        except OSError as exc:
            raise ConfigError(f"setting audit.syslog_address: cannot reach {address}: "
                              f"{exc.strerror or exc}") from None
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        self._writer = threading.Thread(target=self._write, name="audit-syslog", daemon=True)
        self._writer.start()
        self._closed = False

    def emit(self, event: AuditEvent) -> None:
        if self._closed:
            raise ValueError("the audit sink is closed")
        # A full queue (a receiver that stopped reading) waits rather than drops a line.
        self._queue.put(event.line())

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            self._handler.emit(logging.LogRecord("broker.audit", logging.INFO, "", 0, line,
                                                 None, None))

    def close(self) -> None:
        """Send every queued line, then close the socket."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._STOP)
        self._writer.join()
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
