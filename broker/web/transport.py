"""uvicorn's HTTP protocol, with one send per answer instead of two.

uvicorn writes an answer's status line and headers when the app sends ``http.response.start``
and the body when it sends ``http.response.body``: two writes to the socket, so a client
waiting for the answer is woken twice (on a virtual machine each wake-up of a sleeping peer
costs an interrupt between processors). Here the writes one pass of the event loop makes
are joined and sent together at the end of that pass, so an answer the app sends at once
leaves in one write. Nothing is delayed past the pass that wrote it, the bytes and their order
are unchanged, and a pass that writes a lot sends as soon as it has ``SEND_AT`` bytes, so
flow control (the transport's pause_writing) works as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SEND_AT = 64 * 1024


class JoinedWrites:
    """A transport that sends what one pass of the event loop wrote in one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.send)
        chunk = bytes(data)
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= SEND_AT:
            self.send()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def send(self) -> None:
        """Write what is pending (at the end of the pass, or before closing)."""
        if not self._pending:
            return
        pending, self._pending, self._size = self._pending, [], 0
        if self._transport.is_closing() and not self._transport.get_write_buffer_size():
            # Closed, or closing with nothing left to send: the connection is gone, and what
            # was written after it closed goes nowhere. (Closing with bytes still buffered, it
            # sends them first, and these after them, as a direct write would have been.)
            return
        try:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except RuntimeError:
            # uvloop's answer to a write on a connection already torn down (after abort() it
            # may still report the old buffer): gone as well, and nothing for the app to catch.
            return

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self.send()
        self._transport.write_eof()

    def close(self) -> None:
        self.send()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BrokerHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a transport that joins each pass's writes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
