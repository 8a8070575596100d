"""JoinedWrites (broker/web/transport.py) over a real event loop and a real socket pair: what
one pass of the loop writes leaves in one write, byte for byte and in order; nothing waits past
its pass; a large pass is sent at once; closing sends what is pending first."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvloop

from broker.web.transport import SEND_AT, JoinedWrites


class Counted:
    """The real transport, with its writes counted (the only thing added)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


_PEERS: list[asyncio.StreamWriter] = []  # the reading ends' writers, kept open until the end


async def _pair() -> tuple[Counted, JoinedWrites, asyncio.StreamReader]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    counted = Counted(transport)
    reader, writer = await asyncio.open_connection(sock=theirs)
    _PEERS.append(writer)
    return counted, JoinedWrites(counted, loop), reader  # type: ignore[arg-type]


def run(test: Any) -> Any:
    async def with_peers_closed() -> Any:
        try:
            return await test()
        finally:
            for writer in _PEERS:
                writer.close()
            _PEERS.clear()

    return uvloop.run(with_peers_closed())


def test_one_pass_leaves_in_one_write_and_the_control() -> None:
    async def test() -> tuple[list[int], bytes, list[int]]:
        counted, joined, reader = await _pair()
        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        joined.write(b"hello")
        assert counted.writes == []  # still this pass
        await asyncio.sleep(0)
        one_pass = list(counted.writes)
        got = await reader.readexactly(43)
        # The control: the same two writes straight to the transport are two writes.
        counted.writes.clear()
        counted.write(b"a")
        counted.write(b"b")
        joined.close()
        return one_pass, got, counted.writes

    one_pass, got, direct = run(test)
    assert one_pass == [43]
    assert got == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert direct == [1, 1]


def test_passes_are_not_joined_with_each_other() -> None:
    async def test() -> tuple[list[int], bytes]:
        counted, joined, reader = await _pair()
        joined.write(b"first")
        await asyncio.sleep(0)
        joined.write(b"second")
        await asyncio.sleep(0)
        got = await reader.readexactly(11)
        joined.close()
        return counted.writes, got

    writes, got = run(test)
    assert writes == [5, 6]
    assert got == b"firstsecond"


def test_a_large_pass_is_sent_as_it_grows() -> None:
    chunk = b"x" * (SEND_AT // 4)

    async def test() -> tuple[list[int], int]:
        counted, joined, reader = await _pair()
        for _ in range(9):
            joined.write(chunk)
        before_the_pass_ends = list(counted.writes)
        await asyncio.sleep(0)
        got = len(await reader.readexactly(9 * len(chunk)))
        joined.close()
        return before_the_pass_ends, got

    writes, got = run(test)
    assert writes == [SEND_AT, SEND_AT]  # the ninth quarter waits for the end of the pass
    assert got == 9 * len(chunk)


def test_closing_sends_what_is_pending_first() -> None:
    async def test() -> bytes:
        _, joined, reader = await _pair()
        joined.write(b"last words")
        joined.close()
        return await reader.read()  # everything, then the end of the stream

    assert run(test) == b"last words"


def test_abort_drops_what_is_pending() -> None:
    async def test() -> tuple[list[int], bytes]:
        counted, joined, reader = await _pair()
        joined.write(b"never sent")
        joined.abort()
        await asyncio.sleep(0)
        return counted.writes, await reader.read()

    writes, got = run(test)
    assert writes == [] and got == b""


def test_empty_writes_and_the_write_buffer_size() -> None:
    async def test() -> tuple[int, int, list[int]]:
        counted, joined, _ = await _pair()
        joined.write(b"")
        empty = joined.get_write_buffer_size()
        joined.writelines([b"ab", b"cd"])
        pending = joined.get_write_buffer_size()
        await asyncio.sleep(0)
        joined.close()
        return empty, pending, counted.writes

    empty, pending, writes = run(test)
    assert (empty, pending) == (0, 4)
    assert writes == [4]


def test_closing_with_bytes_still_buffered_sends_these_after_them() -> None:
    big = b"x" * (4 * 1024 * 1024)  # more than the socket takes before the peer reads

    async def test() -> tuple[int, bool, bytes]:
        counted, joined, reader = await _pair()
        counted.transport.write(big)  # the peer reads nothing yet: most of it stays buffered
        buffered = counted.transport.get_write_buffer_size()
        counted.transport.close()  # closing, and still sending what is buffered
        joined.write(b"tail")
        joined.send()
        data = await reader.read()  # everything, then the end of the stream
        return buffered, data.endswith(b"tail"), data[: len(big)]

    buffered, tail_sent, head = run(test)
    assert buffered > 0
    assert tail_sent and head == big


def test_closed_with_nothing_buffered_drops_quietly_and_the_control() -> None:
    async def test() -> tuple[list[int], list[int]]:
        counted, joined, _ = await _pair()
        counted.transport.close()  # nothing buffered: gone at once
        joined.write(b"late")
        joined.send()  # dropped, no error
        control, control_joined, _ = await _pair()
        control_joined.write(b"on time")
        control_joined.send()
        control_joined.close()
        return counted.writes, control.writes

    dropped, sent = run(test)
    assert dropped == [] and sent == [7]


def test_after_an_abort_with_bytes_buffered_a_write_goes_nowhere_quietly() -> None:
    big = b"x" * (4 * 1024 * 1024)

    async def test() -> list[object]:
        raised: list[object] = []  # what the loop would log from the scheduled send
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: raised.append(context.get("exception")))
        counted, joined, _ = await _pair()
        counted.transport.write(big)
        counted.transport.abort()  # torn down, though uvloop may still report the buffer
        joined.write(b"late")
        await asyncio.sleep(0)  # the end of the pass: the scheduled send runs
        joined.write(b"x" * SEND_AT)  # sent from write() itself: would raise into the app
        await asyncio.sleep(0)
        return raised

    assert run(test) == []


# -- what BrokerHttpProtocol relies on in uvicorn ---------------------------------------------
#
# BrokerHttpProtocol hands uvicorn's HttpToolsProtocol a JoinedWrites in place of the real
# transport. That is right only while uvicorn reaches the transport in the ways read when it was
# written: every answer through self.transport.write, the connection's end through close, and
# nothing that writes behind JoinedWrites' back. These tests fail (never skip) when the
# installed uvicorn is outside the pinned range or reaches its transport in any other way:
# read the new code, adjust JoinedWrites, then the recorded sets and the pin.

# Each name uvicorn's httptools protocol calls on self.transport, and why JoinedWrites is right
# for it: its own method (write, close) or the real transport's through __getattr__ (which
# neither writes nor closes behind what is pending).
TRANSPORT_CALLS = {"write": "joined", "close": "joined: sends what is pending first",
                   "is_closing": "forwarded", "set_protocol": "forwarded (websocket upgrade)"}
FLOW_CONTROL_CALLS = {"pause_reading", "resume_reading"}


def _attribute_calls(module: Any, owner: str) -> set[str]:
    """The attribute names called on ``self.<owner>`` (or ``<owner>``) in a module's source."""
    import ast
    import inspect

    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if (isinstance(target, ast.Attribute) and target.attr == owner) or (
                    isinstance(target, ast.Name) and target.id == owner):
                found.add(node.func.attr)
    return found


def test_the_installed_uvicorn_is_in_the_pinned_range() -> None:
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    pins = [Requirement(r) for r in requires("broker") or []]
    uvicorn = next(r for r in pins if r.name == "uvicorn")
    assert uvicorn.specifier, "uvicorn must be pinned to the range transport.py was written for"
    assert uvicorn.specifier.contains(version("uvicorn")), (
        f"uvicorn {version('uvicorn')} is outside {uvicorn.specifier}: check what "
        "broker/web/transport.py overrides against it, then move the pin")


def test_uvicorn_reaches_its_transport_only_as_recorded() -> None:
    from uvicorn.protocols.http import flow_control, httptools_impl

    assert _attribute_calls(httptools_impl, "transport") == set(TRANSPORT_CALLS)
    assert _attribute_calls(flow_control, "_transport") == FLOW_CONTROL_CALLS
    # The methods JoinedWrites must define itself (not forward): what writes or closes.
    for name in ("write", "writelines", "close", "abort", "write_eof", "get_write_buffer_size"):
        assert name in vars(JoinedWrites), name


def test_connection_made_takes_the_transport_it_is_given() -> None:
    """BrokerHttpProtocol overrides connection_made(transport) and passes JoinedWrites on: it
    must still be the one place uvicorn's protocol learns its transport."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from broker.web.transport import BrokerHttpProtocol

    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters) == [
        "self", "transport"]
    source = inspect.getsource(HttpToolsProtocol.connection_made)
    assert "self.transport = transport" in source
    assert "FlowControl(transport)" in source
    assert "connection_made" in vars(BrokerHttpProtocol)
    assert [c.__name__ for c in BrokerHttpProtocol.__mro__[1:3]] == [
        "HttpToolsProtocol", "Protocol"]
