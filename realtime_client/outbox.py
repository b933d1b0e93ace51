"""The sending half of :class:`~realtime_client.client.RealtimeClient`: queue, window, flow, retries."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_client.calls import Outcome, PendingCall
from realtime_client.codes import State
from realtime_client.dispatch import FrameRouter
from realtime_client.errors import ClientClosed, MessageTooLarge, RealtimeError
from realtime_client.ids import IdGenerator, check_id

logger = logging.getLogger("realtime_client")


class Outbox(FrameRouter):
    """Calls wait in ``_outbox`` (ids, in call order) and are sent by one task per connection.

    A call is sent when the flow gate is open and fewer than ``max_in_flight`` calls await
    their reply; each attempt arms a timer, and a call still unanswered ``ack_timeout``
    seconds later on the same connection goes back in the queue with the same frame.
    """

    _ids: IdGenerator
    _state: State
    close_error: RealtimeError | None
    max_message_bytes: int | None
    max_in_flight: int
    ack_timeout: float

    def _start(self) -> None:
        raise NotImplementedError

    async def call(self, event: str, data: dict[str, Any] | None = None, id: str | None = None) -> Any:
        """Send ``event`` and return its ack data; raises :class:`RealtimeError` on an error reply."""
        return await self._call(event, data or {}, check_id(id) if id is not None else None)

    async def _call(self, event: str, data: dict[str, Any], call_id: str | None, hook: Outcome | None = None) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(ack: Any, error: RealtimeError | None) -> None:
            if hook is not None:
                hook(ack, error)
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(ack)

        call = self._new_call(event, data, call_id, settle, resend=True)
        try:
            return await future
        except asyncio.CancelledError:
            self._calls.pop(call.id)  # the application gave up: stop retrying it
            raise

    def _new_call(
        self, event: str, data: dict[str, Any], call_id: str | None, on_done: Outcome, *, resend: bool
    ) -> PendingCall:
        if self._state is State.CLOSED:
            raise self.close_error or ClientClosed()
        self._start()
        if call_id is None:
            # An id the application chose may equal a generated one (same prefix): skip it,
            # or a resume's internal call would fail the whole connection.
            call_id = self._ids()
            while call_id in self._calls:
                call_id = self._ids()
        frame = json.dumps({"event": event, "id": call_id, "data": data}, separators=(",", ":"), ensure_ascii=False)
        size = len(frame.encode())
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            raise MessageTooLarge(data={"size": size, "limit": self.max_message_bytes})
        call = PendingCall(call_id, event, frame, on_done, resend=resend, size=size)
        self._calls.add(call)
        self._enqueue(call)
        return call

    def _enqueue(self, call: PendingCall) -> None:
        self._outbox.append(call.id)
        self._wake.set()

    async def _send_loop(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.flow.wait()
                if not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                call = self._calls.get(self._outbox[0])
                if call is None:
                    self._outbox.popleft()
                    continue
                if not self._calls.is_in_flight(call) and self._calls.in_flight >= self.max_in_flight:
                    self._window.clear()
                    await self._window.wait()
                    continue
                self._outbox.popleft()
                self._calls.mark_sent(call, loop.time(), self.ack_timeout)
                loop.call_later(self.ack_timeout, self._ack_timed_out, call.id, call.attempts)
                await ws.send(call.frame)
        except ConnectionClosed:
            return

    def _ack_timed_out(self, call_id: str, attempt: int) -> None:
        call = self._calls.timed_out(call_id, attempt, asyncio.get_running_loop().time())
        if call is not None and self._state is State.OPEN:
            logger.info("no reply to %s %s after %.1fs: sending it again", call.event, call.id, self.ack_timeout)
            self._enqueue(call)
