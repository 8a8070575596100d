"""Audit events: one JSON line for every credential issued or refused.

An event names what happened and to whom, never a secret: the fields are fixed here, and no
field can hold a secret access key, a session token, a signature or a password.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Protocol, TextIO

from broker.clock import iso8601
from broker.frozen import frozen


@frozen
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
    mfa_used: str | None = None  # console sign-in: "Yes" or "No" (CloudTrail's MFAUsed)

    def line(self) -> str:
        # The members in alphabetical order, each value a JSON string: what json.dumps would
        # write (ASCII, escaped by json's own C routine), without building a dict to encode.
        members = []
        for name in _ORDER:
            if name in _CONSOLE_LOGIN:
                if self.event == "ConsoleLogin":
                    members.append(f'"{name}":{self._console_login(name)}')
                continue
            if name == "time":
                value = iso8601(self.time)
            elif name == "type":
                value = "broker.audit"
            else:
                found: object = getattr(self, name)
                if found is None:
                    continue
                if not isinstance(found, str):
                    # Every field is text; should anything else ever reach one, it is written
                    # as json.dumps would, never refused halfway through a request.
                    members.append(f'"{name}":{json.dumps(found, separators=(",", ":"))}')
                    continue
                value = found
            members.append(f'"{name}":{_quote(value)}')
        return "{" + ",".join(members) + "}"


    def _console_login(self, name: str) -> str:
        """A ConsoleLogin event's members shaped as CloudTrail's: the outcome in
        responseElements, MFAUsed in additionalEventData, signin.amazonaws.com as source."""
        if name == "eventSource":
            return '"signin.amazonaws.com"'
        if name == "responseElements":
            outcome = "Failure" if self.outcome == "refused" else "Success"
            return '{"ConsoleLogin":"' + outcome + '"}'
        return '{"MFAUsed":"' + (self.mfa_used or "No") + '"}'


# CloudTrail's members of a ConsoleLogin event (written only for ConsoleLogin).
_CONSOLE_LOGIN = frozenset({"additionalEventData", "eventSource", "responseElements"})
_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "time")
# Every line's members in alphabetical order, as before, without json's sort on every line.
_ORDER = tuple(sorted((*_FIELDS, "time", "type", *_CONSOLE_LOGIN)))
_quote: Callable[[str], str] = encode_basestring_ascii  # json.dumps's quoting, ensure_ascii


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


class FileSink:
    """Each line is one write(2) to a file opened for appending, without the text and buffer
    layers of a Python file object: whole lines, in order, even when several worker processes
    append to the same file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                       | os.O_CLOEXEC, 0o666)
        self._lock = threading.Lock()

    def emit(self, event: AuditEvent) -> None:
        data = (event.line() + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise ValueError("the audit file is closed")
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (rare): the rest, until all is written
                written += os.write(self._fd, data[written:])

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def open_sink(kind: str, path: str, *, command_line: bool = False) -> AuditSink:
    """The configured sink. From the command line, "stdout" means standard error, so that what
    a command prints (``broker init --json``) stays exactly what it documents."""
    if kind == "file":
        return FileSink(Path(path))
    return StreamSink(sys.stderr if command_line else sys.stdout)
