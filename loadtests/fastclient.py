"""A receiving client for fan-out runs, on picows (frame parsing in Cython).

``wsclient.WsClient`` parses frames with the ``websockets`` Sans-I/O protocol, in Python:
about 5 µs a frame, so one load-generator core tops out near 70,000 received frames/s,
below the fan-out target it has to measure. picows parses in Cython and hands each
frame to ``on_ws_frame``; this class gives it the small part of ``WsClient``'s API that
subscribers use (``on_frame``, ``call``, ``close``, ``close_code``, ``closed``). Handshake,
framing, masking and pongs stay in the library.
"""

# ruff: noqa: ASYNC109 - bounded waits take their bound as an argument, on purpose

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadtests.wsclient import InboxReader

FastHandler = Callable[["FastClient", bytes], None]


class FastClient(InboxReader, WSListener):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.inbox: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.on_frame: FastHandler | None = None
        self.code: int | None = None
        self.state: Any = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data = frame.get_payload_as_bytes()
            if self.on_frame is not None:
                self.on_frame(self, data)
            else:
                self.inbox.append(data)
                self._wake()
        elif kind is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:  # the server closed first: record why
                self.code = int(frame.get_close_code().value)
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    @property
    def close_code(self) -> int | None:
        return self.code

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    def send(self, text: str | bytes) -> None:
        if self.transport is not None and not self.closed.done():
            self.transport.send(WSMsgType.TEXT, text.encode() if isinstance(text, str) else text)

    async def close(self, timeout: float = 5.0) -> None:
        if self.transport is None:
            return
        if not self.closed.done() and not self.transport.is_close_frame_sent:
            self.transport.send_close(WSCloseCode.OK)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


async def open_fast_client(url: str, token: str | None, *, welcome: bool, timeout: float = 30.0) -> FastClient:
    """Connect (``Authorization: Bearer``) and, for our server, read the welcome."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with asyncio.timeout(timeout):
        _, client = await ws_connect(FastClient, url, extra_headers=headers, websocket_handshake_timeout=timeout)
        assert isinstance(client, FastClient)
        if welcome:
            await client.read_welcome(timeout)
    return client
