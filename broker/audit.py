"""Audit events: one JSON line for every credential issued or refused.

An event names what happened and to whom, never a secret: the fields are fixed here, and no
field can hold a secret access key, a session token, a signature or a password.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Protocol, TextIO

from broker.clock import iso8601


@dataclass(frozen=True)
class AuditEvent:
    time: datetime
    event: str  # the action (GetSessionToken, CreateAccessKey, ...) or Authenticate
    outcome: str  # "issued" or "refused"
    request_id: str
    source_ip: str | None
    user_agent: str | None
    principal: str | None = None  # ARN of the caller, when known
    account: str | None = None
    caller_access_key_id: str | None = None  # the key that signed the request
    access_key_id: str | None = None  # the key issued
    subject: str | None = None  # the identity the issued credentials speak for
    error_code: str | None = None
    error_message: str | None = None

    def line(self) -> str:
        doc: dict[str, str] = {}
        for name in _ORDER:
            if name == "time":
                doc["time"] = iso8601(self.time)
            elif name == "type":
                doc["type"] = "broker.audit"
            else:
                value = getattr(self, name)
                if value is not None:
                    doc[name] = value
        return _ENCODER.encode(doc)


_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "time")
# Every line's members in alphabetical order, as before, without json's sort on every line.
_ORDER = tuple(sorted((*_FIELDS, "time", "type")))
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditSink(Protocol):
    def emit(self, event: AuditEvent) -> None: ...

    def close(self) -> None: ...


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
        return None


class FileSink(StreamSink):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path.open("a", encoding="utf-8"))
        self._file = self._stream

    def close(self) -> None:
        self._file.close()


def open_sink(kind: str, path: str, *, command_line: bool = False) -> AuditSink:
    """The configured sink. From the command line, "stdout" means standard error, so that what
    a command prints (``broker init --json``) stays exactly what it documents."""
    if kind == "file":
        return FileSink(Path(path))
    return StreamSink(sys.stderr if command_line else sys.stdout)
