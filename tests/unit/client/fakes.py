"""A scripted stand-in for the server side of one WebSocket, for client tests without sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.exceptions import ConnectionClosed

WELCOME = {"session_id": "s", "user": {"id": 1, "username": "alice"}, "max_message_bytes": 1048576}


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self._sent_changed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # The ClientConnection surface the client uses ----------------------------------------

    async def send(self, text: str) -> None:
        if self.close_code is not None:
            raise ConnectionClosed(None, None)
        self.sent.append(json.loads(text))
        self._sent_changed.set()

    def __aiter__(self) -> FakeSocket:
        return self

    async def __anext__(self) -> str:
        item = await self._incoming.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._incoming.put_nowait(None)

    # The test's side -------------------------------------------------------------------

    def feed(self, frame: dict[str, Any]) -> None:
        self._incoming.put_nowait(json.dumps(frame))

    def server_close(self, code: int, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason
        self._incoming.put_nowait(None)

    async def next_sent(self, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until at least ``count`` frames were sent; return the ``count``-th."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._sent_changed.clear()
                await self._sent_changed.wait()
        return self.sent[count - 1]

    def ack(self, frame: dict[str, Any], data: Any) -> None:
        self.feed({"event": "ack", "ref": frame["id"], "data": data})


class FakeServer:
    """Hands out a new :class:`FakeSocket` for each connection the client opens."""

    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self._opened = asyncio.Event()

    async def open(self, url: str, token: str | None, options: Any) -> tuple[FakeSocket, dict[str, Any]]:
        socket = FakeSocket()
        self.sockets.append(socket)
        self._opened.set()
        return socket, dict(WELCOME)

    async def connection(self, number: int, timeout: float = 5.0) -> FakeSocket:
        async with asyncio.timeout(timeout):
            while len(self.sockets) < number:
                self._opened.clear()
                await self._opened.wait()
        return self.sockets[number - 1]
