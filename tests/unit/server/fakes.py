"""An in-memory transport and a server state for driving the server's protocols without sockets."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from websockets.frames import Frame, Opcode

from realtime.server.proxy import TrustedProxies
from realtime.server.state import ASGIApp, ServerSettings, ServerState

KEY = base64.b64encode(os.urandom(16)).decode()


class FakeTransport:
    """What the protocols use of an asyncio transport; records what they do to it."""

    def __init__(self, peer: tuple[str, int] = ("203.0.113.7", 50000)) -> None:
        self.peer = peer
        self.written = bytearray()
        self.eof = False
        self.closed = False
        self.aborted = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.eof, "write after write_eof"
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


def make_state(app: ASGIApp, forwarded_allow_ips: str = "127.0.0.1,::1", **settings: Any) -> ServerState:
    options = {"trusted_proxies": TrustedProxies(forwarded_allow_ips), **settings}
    return ServerState(app, ServerSettings(**options), asyncio.get_running_loop())


def connect(protocol: Any, transport: FakeTransport) -> None:
    transport.protocol = protocol
    protocol.connection_made(transport)


async def settle(rounds: int = 5) -> None:
    """Let the loop run the tasks and callbacks the last event scheduled."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def upgrade_request(version: str = "13", extra: str = "") -> bytes:
    return (
        "GET /ws/?token=abc HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)
