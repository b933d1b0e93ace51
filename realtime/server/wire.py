"""Per-connection I/O helpers for the production server (``websocket.py``): lean by design.

At 10,000 connections every object a connection keeps costs ~10 MB and every call a
broadcast makes per connection costs ~10 ms, so these replace general-purpose asyncio
pieces on the hot path:

- :class:`CoalescingTransport` and :class:`WriteFlusher`: everything written to a
  connection during one event-loop iteration leaves in one ``transport.write`` (one
  system call), or sooner past 64 KiB so that the transport's backpressure still engages
  near its high water mark. All writes go through it, so order is kept.
- :func:`wire_bytes`: a broadcast hands the same ``str`` to every subscriber; its frame is
  built once (by the ``websockets`` library: servers never mask) and reused.
- :class:`MessageQueue` and :class:`Gate`: the one-consumer queue and the flag a
  WebSocket connection needs, without the three (queue) and one (event) deques that
  ``asyncio.Queue`` and ``asyncio.Event`` allocate up front (~600 bytes each).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

from websockets.frames import Frame, Opcode

from realtime.loop.local import LoopLocal

T = TypeVar("T")

# Recently framed texts by identity: a broadcast reaches its subscribers one after the
# other with the same ``str`` object, so a few entries serve a whole fan-out. Bounded in
# bytes as well (section 11): a text and its frame are both held, and a few huge replies
# must not pin hundreds of MB for the whole process.
WIRE_CACHE_SIZE = 16
WIRE_CACHE_BYTES = 8 * 1024 * 1024
wire_cache: dict[int, tuple[str, bytes]] = {}
_wire_cache_bytes = 0


# Past this many buffered bytes a connection's writes go out at once, so that pause_writing
# (the transport's backpressure) still fires near its high water mark, not one iteration late.
COALESCE_LIMIT = 64 * 1024


class CoalescingTransport:
    """A transport whose writes wait for the end of the loop iteration, then leave together."""

    __slots__ = ("_chunks", "_flusher", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, flusher: WriteFlusher) -> None:
        self.transport = transport
        self._flusher = flusher
        self._chunks: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            self._chunks = [data]
            self._size = len(data)
            if self._size > COALESCE_LIMIT:
                self.flush()
            else:
                self._flusher.mark(self)
            return
        chunks.append(data)
        self._size += len(data)
        if self._size > COALESCE_LIMIT:
            self.flush()

    def flush(self) -> None:
        chunks, self._chunks, self._size = self._chunks, None, 0
        if chunks and not self.transport.is_closing():
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._chunks, self._size = None, 0
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    # Called for every message a connection waits on: spelled out, not through ``__getattr__``.
    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class WriteFlusher:
    """Flushes every connection written to during this loop iteration, once, after the rest of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._marked: list[CoalescingTransport] = []

    def mark(self, transport: CoalescingTransport) -> None:
        if not self._marked:
            self._loop.call_soon(self._flush)
        self._marked.append(transport)

    def _flush(self) -> None:
        marked, self._marked = self._marked, []
        for transport in marked:
            transport.flush()


_flushers: LoopLocal[WriteFlusher] = LoopLocal(WriteFlusher)


def flusher_for(loop: asyncio.AbstractEventLoop) -> WriteFlusher:
    return _flushers.get(loop)


def wire_bytes(text: str) -> bytes:
    """The unmasked, uncompressed text frame for ``text`` (servers never mask)."""
    key = id(text)
    hit = wire_cache.get(key)
    if hit is not None and hit[0] is text:
        return hit[1]
    wire = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    global _wire_cache_bytes
    size = len(text) + len(wire)
    if size > WIRE_CACHE_BYTES // 4:
        return wire  # too big to keep: framing it again costs less than pinning it
    while wire_cache and (len(wire_cache) >= WIRE_CACHE_SIZE or _wire_cache_bytes + size > WIRE_CACHE_BYTES):
        old_text, old_wire = wire_cache.pop(next(iter(wire_cache)))
        _wire_cache_bytes -= len(old_text) + len(old_wire)
    wire_cache[key] = (text, wire)  # holding ``text`` keeps its id from being reused
    _wire_cache_bytes += size
    return wire


def wire_cache_bytes() -> int:
    """Bytes the broadcast frame cache holds now (texts and their frames)."""
    return _wire_cache_bytes


class MessageQueue(Generic[T]):
    """``asyncio.Queue``'s ``put_nowait``/``get``/``empty`` for one reader, allocating only while non-empty.

    Given its ``loop``, a wait does not look the running loop up: on Python 3.11 that lookup
    makes a ``getpid`` system call, once per message received.
    """

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._items: deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._waiter = (self._loop or asyncio.get_running_loop()).create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def waited_for(self) -> bool:
        """Whether the reader waits in ``get`` and nothing is queued ahead of the next item."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Gate:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait``, with waiters allocated only while closed."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> Any:
        while not self._open:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True
