"""A loopback TCP proxy for fault-injection tests of WebSocket clients (test code only).

    proxy = await FaultProxy("127.0.0.1", server.port).start()
    client = RealtimeClient(proxy.ws_url, ...)
    proxy.drop_frames(lambda f: f.get("event") == "ack" and f.get("ref") == "x")  # drop the first match
    await proxy.cut()              # abort every open connection (both sides see a reset)
    proxy.refuse = True            # new connections are closed at once (the network is "down")
    proxy.delay = 0.2              # add latency to every chunk, both directions
    proxy.stall() / proxy.unstall()  # stop forwarding (connections stay open), then go on

Server-to-client bytes are parsed just enough to find WebSocket frame boundaries
(server frames are not masked, RFC 6455 section 5.1): after the HTTP response head,
each complete text frame is decoded as JSON and offered to the drop rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FrameRule = Callable[[dict[str, Any]], bool]


@dataclass
class _DropRule:
    match: FrameRule
    remaining: int


def parse_frame(buffer: bytes | bytearray) -> tuple[int, int, bytes] | None:
    """``(opcode, total length, payload)`` of the frame at the start of ``buffer``, or None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    masked = buffer[1] & 0x80
    length = buffer[1] & 0x7F
    pos = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length = int.from_bytes(buffer[2:4], "big")
        pos = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length = int.from_bytes(buffer[2:10], "big")
        pos = 10
    mask = b""
    if masked:
        if len(buffer) < pos + 4:
            return None
        mask = bytes(buffer[pos : pos + 4])
        pos += 4
    if len(buffer) < pos + length:
        return None
    payload = bytes(buffer[pos : pos + length])
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, pos + length, payload


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0
        self.refuse = False
        self.accepted = 0
        self.dropped: list[dict[str, Any]] = []
        self.frame_dropped = asyncio.Event()
        self._rules: list[_DropRule] = []
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_frames(self, match: FrameRule, count: int = 1) -> None:
        """Drop the next ``count`` server-to-client text frames whose JSON satisfies ``match``."""
        self._rules.append(_DropRule(match, count))

    def stall(self) -> None:
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        """Abort every open connection (RST-like: no WebSocket close frame reaches either side)."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            for writer in (link.client, link.server):
                writer.transport.abort()
            for task in link.tasks:
                task.cancel()
        for link in links:
            for task in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, link, parse=False)),
            asyncio.create_task(self._pipe(up_reader, writer, link, parse=True)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, parse: bool) -> None:
        buffer = bytearray()
        in_frames = not parse
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                if not parse:
                    writer.write(chunk)
                else:
                    buffer += chunk
                    if not in_frames and b"\r\n\r\n" in buffer:
                        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
                        writer.write(head + b"\r\n\r\n")
                        buffer = bytearray(rest)
                        in_frames = True
                    if in_frames:
                        writer.write(self._filter(buffer))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(link)
            for side in (link.client, link.server):
                side.transport.abort()

    def _filter(self, buffer: bytearray) -> bytes:
        """Take the complete frames off ``buffer``; return their bytes minus the dropped ones."""
        out = bytearray()
        while (parsed := parse_frame(buffer)) is not None:
            opcode, size, payload = parsed
            frame_bytes = bytes(buffer[:size])
            del buffer[:size]
            if opcode == 0x1 and frame_bytes[0] & 0x80 and self._should_drop(payload):
                continue
            out += frame_bytes
        return bytes(out)

    def _should_drop(self, payload: bytes) -> bool:
        if not self._rules:
            return False
        try:
            frame = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(frame, dict):
            return False
        for rule in self._rules:
            if rule.remaining > 0 and rule.match(frame):
                rule.remaining -= 1
                self.dropped.append(frame)
                self.frame_dropped.set()
                return True
        return False
