"""A lean WebSocket client for load generation: the ``websockets`` Sans-I/O ``ClientProtocol`` on an asyncio Protocol.

The asyncio ``websockets`` client runs a reader task, a frame assembler and a future per
``recv()``; at tens of thousands of frames per second on one core that would make the
load generator the bottleneck. Here frames are handed to a plain callback straight from
``data_received``, and everything a callback sends while a chunk is being processed goes
out in one ``transport.write``. Handshake, masking, framing, pings and the closing
handshake are still done by the ``websockets`` library.
"""

# ruff: noqa: ASYNC109 - bounded waits take their bound as an argument, on purpose

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

FrameHandler = Callable[["WsClient", bytes], None]


class InboxReader:
    """Reading replies: what ``WsClient`` and the picows ``FastClient`` share.

    The class keeps ``inbox`` (frames not taken by an ``on_frame`` callback), ``closed``,
    ``close_code`` and ``_waiter``, and implements ``send``.
    """

    __slots__ = ()
    inbox: collections.deque[bytes]
    closed: asyncio.Future[None]
    _waiter: asyncio.Future[None] | None

    @property
    def close_code(self) -> int | None:
        raise NotImplementedError

    def send(self, text: str | bytes) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send(orjson.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self.inbox:
                if self.closed.done():
                    raise ConnectionError(f"connection closed ({self.close_code})")
                self._waiter = asyncio.get_running_loop().create_future()  # type: ignore[misc]  # a slot of the subclass
                await self._waiter
        return self.inbox.popleft()

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(await self.recv(timeout))
        return value

    def abort(self) -> None:
        raise NotImplementedError

    async def read_welcome(self, timeout: float) -> None:
        """Read the first frame, which must be our server's ``session.welcome``; abort otherwise."""
        try:
            frame = await self.recv_json(timeout)
            if frame.get("event") != "session.welcome":
                raise ConnectionError(f"expected session.welcome, got {frame!r:.200}")
        except BaseException:
            self.abort()
            raise

    async def call(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a frame and return the next ack or error (pushes read meanwhile are dropped)."""
        self.send_json(frame)
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.recv_json(timeout)
                if reply.get("event") in ("ack", "error"):
                    return reply


class WsClient(InboxReader, asyncio.Protocol):
    """One connection. Frames go to ``on_frame`` when set, else to an inbox read with ``recv()``."""

    __slots__ = (
        "_buffered",
        "_fragments",
        "_request",
        "_waiter",
        "closed",
        "conn",
        "inbox",
        "on_frame",
        "opened",
        "state",
        "transport",
    )

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.conn = ClientProtocol(parse_uri(url), max_size=None)
        self._request = self.conn.connect()
        for name, value in (headers or {}).items():
            self._request.headers[name] = value
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.inbox: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.on_frame: FrameHandler | None = None
        self._buffered = False
        self._fragments: list[bytes] = []
        self.state: Any = None  # per-mode bookkeeping (send times, counters)

    # asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.conn.send_request(self._request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._buffered = True
        try:
            for event in self.conn.events_received():
                if isinstance(event, Frame):
                    self._frame(event)
                elif isinstance(event, Response) and not self.opened.done():
                    if self.conn.state is State.OPEN:
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(self.conn.handshake_exc or ConnectionError("handshake failed"))
        finally:
            self._buffered = False
        self._flush()
        if self.conn.close_expected() and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.conn.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    # frames ----------------------------------------------------------------------------
    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if not frame.fin:
                self._fragments.append(bytes(frame.data))
                return
            data = bytes(frame.data)
            if self._fragments:
                data = b"".join([*self._fragments, data])
                self._fragments.clear()
            if self.on_frame is not None:
                self.on_frame(self, data)
            else:
                self.inbox.append(data)
                self._wake()

    def _flush(self) -> None:
        if self._buffered or self.transport is None:
            return
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(b"".join(data))

    # API -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.conn.state is State.OPEN and not self.closed.done()

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    def send(self, text: str | bytes) -> None:
        """Queue a text frame; it is written now, or at the end of the chunk being processed."""
        if self.conn.state is not State.OPEN:
            return
        self.conn.send_text(text.encode() if isinstance(text, str) else text)
        self._flush()

    def send_many(self, texts: Iterable[bytes]) -> None:
        buffered, self._buffered = self._buffered, True
        try:
            for text in texts:
                self.send(text)
        finally:
            self._buffered = buffered
        self._flush()

    async def close(self, timeout: float = 5.0) -> None:
        """The closing handshake (1000), bounded; the socket is aborted if the server is slow."""
        if self.transport is None:
            return
        if self.conn.state is State.OPEN:
            self.conn.send_close(1000)
            self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_client(url: str, token: str | None, *, welcome: bool, timeout: float = 30.0) -> WsClient:
    """Connect (``Authorization: Bearer``), finish the handshake and, for our server, read the welcome."""
    uri = parse_uri(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(lambda: WsClient(url, headers), uri.host, uri.port)
        try:
            await client.opened
        except BaseException:
            client.abort()
            raise
        if welcome:
            await client.read_welcome(timeout)
    return client


class Closable(Protocol):
    closed: asyncio.Future[None]

    async def close(self, timeout: float = 5.0) -> None: ...

    def abort(self) -> None: ...


async def close_all(clients: Iterable[Closable], timeout: float = 10.0) -> None:
    """Close cleanly where the server answers within ``timeout``; abort the rest."""
    items = list(clients)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(client.close(timeout) for client in items), return_exceptions=True)
    for client in items:
        if not client.closed.done():
            client.abort()
