"""Issue 20: the WebSocket connection on ``websockets``' Sans-I/O protocol (realtime/server/websocket.py),
driven in memory: the contract's close codes and reasons, the close handshake kept while a
client is still sending, the ping limit, shutdown, send_now and backpressure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from websockets.frames import Close, Frame, Opcode

from realtime.server.extensions import SEND_NOW
from realtime.server.state import Message
from realtime.server.websocket import WebSocketConnection
from tests.unit.server.fakes import FakeTransport, connect, make_state, masked, settle, upgrade_request


class App:
    """Accepts, then records what it receives until the disconnect."""

    def __init__(self, accept: bool = True) -> None:
        self.received: list[Message] = []
        self.scope: dict[str, Any] = {}
        self.accept = accept
        self.sent: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.received.append(await receive())
        await send({"type": "websocket.accept", "subprotocol": "v1"} if self.accept else {"type": "websocket.close"})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close me":
                await send({"type": "websocket.close", "code": 4000, "reason": "bye"})


async def opened(app: App, **settings: Any) -> tuple[WebSocketConnection, FakeTransport]:
    transport = FakeTransport()
    protocol = WebSocketConnection(make_state(app, **settings), ("203.0.113.7", 5), ("127.0.0.1", 8000), "ws")
    connect(protocol, transport)
    protocol.data_received(upgrade_request(extra="Sec-WebSocket-Protocol: v1\r\n"))
    await settle()
    return protocol, transport


def close_frame(data: bytes | bytearray) -> tuple[int, str]:
    """The code and reason of the (unmasked) close frame at the end of ``data``."""
    index = data.rindex(b"\x88")
    frame = Frame(Opcode.CLOSE, data[index + 2 : index + 2 + data[index + 1]])
    close = Close.parse(bytes(frame.data))
    return close.code, close.reason


async def test_handshake_accepts_with_subprotocol_and_offers_send_now() -> None:
    """Issue 20: 101 with the chosen subprotocol; the scope offers realtime.send_now, which writes a frame."""
    app = App()
    protocol, transport = await opened(app)
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: v1" in transport.written
    assert app.scope["subprotocols"] == ["v1"]
    assert app.scope["query_string"] == b"token=abc"
    assert app.scope["headers"] == []  # released once accepted (read in connect)
    transport.take()
    assert app.scope["extensions"][SEND_NOW]["send"]("hello") is True
    assert app.scope["extensions"][SEND_NOW]["send"]("again") is True
    assert transport.written == b""  # coalesced: one write at the end of the loop iteration
    await settle()
    assert transport.take() == b"\x81\x05hello\x81\x05again"
    protocol.pause_writing()
    assert app.scope["extensions"][SEND_NOW]["send"]("later") is False
    assert not transport.reading  # nothing is read while answers cannot leave


async def test_unsupported_version_is_426_naming_13() -> None:
    """Issue 20: Sec-WebSocket-Version 8 -> 426 with Sec-WebSocket-Version: 13."""
    transport = FakeTransport()
    protocol = WebSocketConnection(make_state(App()), None, None, "ws")
    connect(protocol, transport)
    protocol.data_received(upgrade_request(version="8"))
    assert transport.written.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13" in transport.written
    assert transport.closed


async def test_close_before_accept_is_403() -> None:
    """Issue 20: an app that closes before accepting refuses the upgrade with 403."""
    _, transport = await opened(App(accept=False))
    assert transport.written.startswith(b"HTTP/1.1 403 ")


async def test_invalid_utf8_closes_1007_with_one_warning_and_keeps_reading(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20: invalid UTF-8 -> close 1007 invalid_utf8, one warning line; the write side is
    shut and input is still read (and dropped) until the client closes."""
    app = App()
    protocol, transport = await opened(app)
    transport.take()
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        protocol.data_received(masked(Opcode.TEXT, b"\xff\xfe") + masked(Opcode.TEXT, b"\xff"))
    await settle()
    assert close_frame(transport.written) == (1007, "invalid_utf8")
    assert [r.message for r in caplog.records if r.name == "realtime.server"] == [
        "closing connection: invalid UTF-8 in a text frame at byte 0"
    ]
    assert transport.eof
    assert not transport.closed
    assert transport.reading
    protocol.data_received(masked(Opcode.TEXT, b"still sending"))  # dropped
    protocol.eof_received()
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1007, "reason": "invalid_utf8"}


async def test_oversized_message_closes_1009_message_too_large_while_the_client_sends() -> None:
    """Issue 20: a message over the limit -> 1009 message_too_large; the close frame is written
    even though the client keeps sending, and the connection is aborted only after close_timeout."""
    app = App()
    protocol, transport = await opened(app, ws_max_size=16, close_timeout=0.05)
    transport.take()
    protocol.data_received(masked(Opcode.BINARY, b"x" * 17))
    assert close_frame(transport.written) == (1009, "message_too_large")
    assert transport.eof
    protocol.data_received(masked(Opcode.BINARY, b"y" * 100))
    assert not transport.closed
    await asyncio.sleep(0.1)
    assert transport.aborted


async def test_fragmented_text_is_reassembled() -> None:
    """Issue 20: a text message in fragments reaches the app whole."""
    app = App()
    protocol, _ = await opened(app)
    protocol.data_received(masked(Opcode.TEXT, b"ab", fin=False) + masked(Opcode.CONT, b"c", fin=False))
    protocol.data_received(masked(Opcode.CONT, "é".encode()))
    await settle()
    assert app.received[-1] == {"type": "websocket.receive", "text": "abcé"}


async def test_ping_flood_closes_4429_rate_limited() -> None:
    """Issue 14 on the owned protocol: pings past REALTIME_RATE_LIMIT close with 4429 rate_limited."""
    protocol, transport = await opened(App(), ping_rate=5.0)
    transport.take()
    protocol.data_received(b"".join(masked(Opcode.PING, b"%d" % n) for n in range(200)))
    written = transport.take()
    assert close_frame(written) == (4429, "rate_limited")
    assert written.endswith(b"rate_limited")  # the pongs of the pings read with it come first
    protocol.data_received(masked(Opcode.PING, b"more"))
    assert transport.take() == b""  # after the close, pings are dropped unanswered


async def test_app_close_times_out_into_an_abort() -> None:
    """Issue 20: the app's close waits close_timeout for the client's reply, then aborts."""
    app = App()
    protocol, transport = await opened(app, close_timeout=0.05)
    protocol.data_received(masked(Opcode.TEXT, b"close me"))
    await settle()
    assert close_frame(transport.written) == (4000, "bye")
    assert not transport.closed
    await asyncio.sleep(0.1)
    assert transport.aborted


async def test_client_close_is_echoed() -> None:
    """Issue 20: the client's close reaches the app with its code and reason and is echoed."""
    app = App()
    protocol, transport = await opened(app)
    transport.take()
    protocol.data_received(masked(Opcode.CLOSE, Close(1000, "done").serialize()))
    await settle()
    assert close_frame(transport.written) == (1000, "done")
    assert transport.closed
    assert {"type": "websocket.disconnect", "code": 1000, "reason": "done"} in app.received


async def test_shutdown_closes_1012_service_restart() -> None:
    """Issue 20: server shutdown closes an open connection with 1012 service_restart."""
    app = App()
    protocol, transport = await opened(app)
    protocol.shutdown()
    await settle()
    assert close_frame(transport.written) == (1012, "service_restart")
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1012, "reason": "service_restart"}


class BusyApp(App):
    """Accepts, then takes one message at a time only when ``gate`` is set (a slow application)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.received.append(await receive())
        await send({"type": "websocket.accept"})
        while True:
            await self.gate.wait()
            self.gate.clear()
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                return


async def test_a_message_the_app_waits_for_does_not_pause_reading() -> None:
    """Issue 19: with the application already waiting in ``receive``, a message goes straight to
    it and reading is not paused and resumed for it (two transport calls per message saved)."""
    app = App()
    protocol, transport = await opened(app)
    protocol.data_received(masked(Opcode.TEXT, b"one"))
    assert transport.reading
    await settle()
    assert app.received[-1] == {"type": "websocket.receive", "text": "one"}
    assert transport.reading


async def test_reading_pauses_while_a_message_waits_for_a_busy_app() -> None:
    """Backpressure: a message the application is not waiting for pauses reading until it is taken."""
    app = BusyApp()
    protocol, transport = await opened(app)
    app.gate.set()
    await settle()  # the app waits in receive
    protocol.data_received(masked(Opcode.TEXT, b"one"))  # taken by the waiting app: still reading
    await settle()
    assert transport.reading
    protocol.data_received(masked(Opcode.TEXT, b"two"))  # the app is busy (gate closed)
    assert not transport.reading
    await settle()
    assert not transport.reading
    app.gate.set()
    await settle()
    assert app.received[-1] == {"type": "websocket.receive", "text": "two"}
    assert transport.reading
