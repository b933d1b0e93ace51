"""Outbox: how frames leave one connection, in order, without unbounded buffering (section 9).

A frame with nothing queued or in flight ahead of it is written at once through the
server's synchronous ``send_now`` (when the server offers it and the transport has room):
no task, no await, which is what lets one process fan an event out to thousands of
connections quickly. Otherwise replies are awaited on the consumer's task, and pushes
(fan-out, replays, announcements, flow signals) and replies that would overtake them go
through a bounded :class:`SendQueue`, drained by a writer task that exists only
while the queue is non-empty and that waits on the transport's backpressure (the ASGI
server's ``send`` blocks while the socket's buffer is full). A full queue means the
client reads too slowly: ``on_overflow`` closes it with 1013 ``slow_consumer`` and the
client resumes from its offsets.

Replays never cause that: they wait (:meth:`Outbox.wait_for_room`) until each frame fits
in half the queue, by frames and by bytes, so the other half stays free for replies and
live pushes. Any number of replays of one connection may wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from realtime.loop.flow_control import SendQueue
from realtime.ops.metrics import FRAMES_OUT


class Outbox:
    __slots__ = (
        "_direct",
        "_on_overflow",
        "_room_waiters",
        "_send",
        "_send_now",
        "_writer",
        "closed",
        "queue",
        "sent",
    )

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        queue: SendQueue,
        on_overflow: Callable[[], None],
        send_now: Callable[[str], bool] | None = None,
    ) -> None:
        self._send = send
        self._send_now = send_now
        self.queue = queue
        self._on_overflow = on_overflow
        self._writer: asyncio.Task[None] | None = None
        self._direct = False
        # Replays waiting for room: (frames, characters, future), woken in order as the queue drains.
        self._room_waiters: list[tuple[int, int, asyncio.Future[None]]] | None = None
        self.closed = False
        self.sent = 0

    async def reply(self, frame: str) -> None:
        """Send now if nothing is queued or in flight; otherwise queue behind what is."""
        if self.closed:
            return
        if self._writer is not None or self._direct or self.queue:
            self.push(frame)
            return
        if self._send_now is not None and self._send_now(frame):
            self.sent += 1
            FRAMES_OUT.pending += 1
            return
        self._direct = True
        try:
            self.sent += 1
            FRAMES_OUT.pending += 1
            await self._send(frame)
        except OSError:
            self.close()  # the peer is gone; the server's disconnect event cleans up
        finally:
            self._direct = False
        if self.queue and self._writer is None and not self.closed:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def push(self, frame: str) -> bool:
        """Queue a frame without waiting. False if closed or the queue overflowed (then ``on_overflow`` ran)."""
        if self.closed:
            return False
        idle = self._writer is None and not self._direct and not self.queue.length
        if idle and self._send_now is not None and self._send_now(frame):
            self.sent += 1
            FRAMES_OUT.pending += 1
            return True
        if not self.queue.put(frame):
            self.close()
            self._on_overflow()
            return False
        if self._writer is None and not self._direct:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        queue = self.queue
        try:
            while queue and not self.closed:
                frame = queue.pop()
                self._wake_room_waiter()
                self.sent += 1
                FRAMES_OUT.pending += 1
                await self._send(frame)
        except OSError:
            self.close()
        finally:
            self._writer = None
            self._wake_room_waiter()

    def has_room(self, frames: int, size: int = 0) -> bool:
        """Whether ``frames`` more frames of ``size`` characters in all fit in half the queue (a
        frame larger than that still fits an empty queue, as :class:`SendQueue` accepts it)."""
        queue = self.queue
        if queue.length + frames > max(1, queue.max_frames // 2):
            return False
        return not queue.length or queue.bytes + size <= queue.max_bytes // 2

    async def wait_for_room(self, frames: int, size: int = 0) -> bool:
        """Wait until ``frames`` more (``size`` characters) fit (replays are paced by the queue
        instead of overflowing it). False once the outbox is closed."""
        while not self.closed and not self.has_room(frames, size):
            waiter = asyncio.get_running_loop().create_future()
            if self._room_waiters is None:
                self._room_waiters = []
            self._room_waiters.append((frames, size, waiter))
            try:
                await waiter
            finally:
                if self._room_waiters is not None and (frames, size, waiter) in self._room_waiters:
                    self._room_waiters.remove((frames, size, waiter))
                    if not self._room_waiters:
                        self._room_waiters = None
        return not self.closed

    def _wake_room_waiter(self) -> None:
        waiters = self._room_waiters
        if waiters is None:
            return
        for entry in list(waiters):
            frames, size, waiter = entry
            if self.closed or self.has_room(frames, size):
                waiters.remove(entry)
                if not waiter.done():
                    waiter.set_result(None)
        if not waiters:
            self._room_waiters = None

    def close(self) -> None:
        """Stop sending: drop what is queued and release anyone waiting for room."""
        self.closed = True
        self.queue.clear()
        self._wake_room_waiter()
