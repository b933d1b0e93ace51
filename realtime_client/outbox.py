"""The sending half of :class:`~realtime_client.client.RealtimeClient`: queue, window, flow, retries, replies."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_client.calls import CallTracker, Outcome, PendingCall
from realtime_client.errors import MessageTooLarge, RealtimeError, ServerError
from realtime_client.flow import FlowGate
from realtime_client.ids import IdGenerator

logger = logging.getLogger("realtime_client")

RATE_LIMITED_PAUSE = 0.1  # when `rate_limited` arrives with no pause in force (it should not)


class OutboxOwner(Protocol):
    """What the outbox needs from its client."""

    def ensure_running(self) -> None:
        """Raise why the client stopped for good; else make sure its connection task runs."""

    @property
    def is_open(self) -> bool:
        """A connection is open (a timed-out call is sent again only then)."""


class Outbox:
    """Calls wait in ``queue`` (ids, in call order) and are sent by one task per connection.

    A call is sent when the flow gate is open and fewer than ``max_in_flight`` calls await
    their reply; each attempt arms a timer, and a call still unanswered ``ack_timeout``
    seconds later on the same connection goes back in the queue with the same frame.
    """

    def __init__(self, owner: OutboxOwner, *, ack_timeout: float, max_in_flight: int, id_prefix: str | None) -> None:
        self._owner = owner
        self.ack_timeout = ack_timeout
        self.max_in_flight = max_in_flight
        self.max_message_bytes: int | None = None
        self.flow = FlowGate()
        self.calls = CallTracker()
        self.queue: deque[str] = deque()
        self._ids = IdGenerator(id_prefix)
        self._wake = asyncio.Event()
        self._window = asyncio.Event()

    async def call(self, event: str, data: dict[str, Any], call_id: str | None, hook: Outcome | None = None) -> Any:
        """Send ``event``, wait for its reply; ``hook`` sees the outcome first, inline."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(ack: Any, error: RealtimeError | None) -> None:
            if hook is not None:
                hook(ack, error)
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(ack)

        call = self.new_call(event, data, call_id, settle, resend=True)
        try:
            return await future
        except asyncio.CancelledError:
            self.calls.pop(call.id)  # the application gave up: stop retrying it
            raise

    def new_call(
        self, event: str, data: dict[str, Any], call_id: str | None, on_done: Outcome, *, resend: bool
    ) -> PendingCall:
        self._owner.ensure_running()
        if call_id is None:
            # An id the application chose may equal a generated one (same prefix): skip it,
            # or a resume's internal call would fail the whole connection.
            call_id = self._ids()
            while call_id in self.calls:
                call_id = self._ids()
        frame = json.dumps({"event": event, "id": call_id, "data": data}, separators=(",", ":"), ensure_ascii=False)
        size = len(frame.encode())
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            raise MessageTooLarge(data={"size": size, "limit": self.max_message_bytes})
        call = PendingCall(call_id, event, frame, on_done, resend=resend, size=size)
        self.calls.add(call)
        self._enqueue(call)
        return call

    def _enqueue(self, call: PendingCall) -> None:
        self.queue.append(call.id)
        self._wake.set()

    def on_reply(self, frame: dict[str, Any]) -> None:
        """An ``ack`` or ``error`` frame: settle its call, or queue it again if it was refused unprocessed."""
        ref = frame.get("ref")
        call = self.calls.get(ref if isinstance(ref, str) else None)
        if call is None:
            if frame["event"] == "error":
                logger.warning("error reply to no pending call: %s", frame.get("data"))
            return  # a late duplicate reply to a retried call
        data = frame.get("data")
        if frame["event"] == "error":
            error_data: dict[str, Any] = data if isinstance(data, dict) else {}
            code = str(error_data.get("code", "error"))
            if code == "rate_limited" and self.calls.is_in_flight(call):
                # Refused, not processed: send it again once the pause is over.
                self.calls.mark_unsent(call)
                if not self.flow.paused:
                    self.flow.pause(RATE_LIMITED_PAUSE)
                self._enqueue(call)
                self._window.set()
                return
            self.calls.pop(call.id)
            self._window.set()
            call.finish(None, ServerError(code, error_data))
            return
        self.calls.pop(call.id)
        self._window.set()
        call.finish(data, None)

    def new_connection(self) -> list[PendingCall]:
        """A connection opened: fail the calls it supersedes, empty the queue; return the calls to send again.

        The caller queues its own calls (re-subscribes) first, then :meth:`requeue` these.
        """
        self.flow.resume()
        resend, superseded = self.calls.new_connection()
        for call in superseded:
            call.finish(None, RealtimeError("superseded"))
        self.queue.clear()
        return resend

    def requeue(self, calls: list[PendingCall]) -> None:
        self.queue.extend(call.id for call in calls)
        self._wake.set()

    async def send_loop(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.flow.wait()
                if not self.queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                call = self.calls.get(self.queue[0])
                if call is None:
                    self.queue.popleft()
                    continue
                if not self.calls.is_in_flight(call) and self.calls.in_flight >= self.max_in_flight:
                    self._window.clear()
                    await self._window.wait()
                    continue
                self.queue.popleft()
                self.calls.mark_sent(call, loop.time(), self.ack_timeout)
                loop.call_later(self.ack_timeout, self._ack_timed_out, call.id, call.attempts)
                await ws.send(call.frame)
        except ConnectionClosed:
            return

    def _ack_timed_out(self, call_id: str, attempt: int) -> None:
        call = self.calls.timed_out(call_id, attempt, asyncio.get_running_loop().time())
        if call is not None and self._owner.is_open:
            logger.info("no reply to %s %s after %.1fs: sending it again", call.event, call.id, self.ack_timeout)
            self._enqueue(call)

    def fail_oversize(self) -> None:
        """The server closed 1009: the largest call in flight was the one too big."""
        call = self.calls.largest_in_flight()
        if call is not None:
            self.calls.pop(call.id)
            call.finish(None, MessageTooLarge(data={"size": call.size}))

    def stop(self, error: RealtimeError) -> None:
        """The client stopped for good: every pending call fails with ``error``, every waiter wakes."""
        for call in self.calls.drain():
            call.finish(None, error)
        self.queue.clear()
        self.flow.resume()
        self._wake.set()
        self._window.set()
