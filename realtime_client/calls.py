"""Pending calls: ids, retries and the in-flight window, without I/O. Pure.

A :class:`PendingCall` lives from ``call()`` until its reply (or until the client stops
for good). It keeps its ``id`` and its rendered frame across every retry, so the server
sees the same idempotency key each time. The :class:`CallTracker` knows which calls are
in flight on the current connection, which ones timed out, and which ones must be sent
again after a reconnect.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime_client.errors import RealtimeError

# Called once with (ack data, None) or (None, error).
Outcome = Callable[[Any, RealtimeError | None], None]

_order = itertools.count()


@dataclass(eq=False, slots=True)
class PendingCall:
    id: str
    event: str
    frame: str
    on_done: Outcome
    resend: bool = True  # sent again after a reconnect; False for internal calls a reconnect supersedes
    size: int = 0
    attempts: int = 0
    connection: int | None = None  # the connection it was last sent on
    deadline: float | None = None  # when the current attempt times out
    order: int = field(default_factory=lambda: next(_order))
    done: bool = False

    def finish(self, data: Any, error: RealtimeError | None) -> None:
        if not self.done:
            self.done = True
            self.on_done(data, error)


class CallTracker:
    def __init__(self) -> None:
        self._calls: dict[str, PendingCall] = {}
        self._in_flight: set[str] = set()
        self.connection = 0

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: PendingCall) -> None:
        if call.id in self._calls:
            raise ValueError(f"a call with id {call.id!r} is already pending")
        self._calls[call.id] = call

    def get(self, call_id: str | None) -> PendingCall | None:
        return None if call_id is None else self._calls.get(call_id)

    def pop(self, call_id: str) -> PendingCall | None:
        self._in_flight.discard(call_id)
        return self._calls.pop(call_id, None)

    @property
    def in_flight(self) -> int:
        """Calls sent on the current connection and not answered yet."""
        return len(self._in_flight)

    def is_in_flight(self, call: PendingCall) -> bool:
        return call.id in self._in_flight

    def mark_sent(self, call: PendingCall, now: float, timeout: float) -> None:
        call.attempts += 1
        call.connection = self.connection
        call.deadline = now + timeout
        self._in_flight.add(call.id)

    def mark_unsent(self, call: PendingCall) -> None:
        """The server refused the call without processing it (``rate_limited``): send it again."""
        self._in_flight.discard(call.id)
        call.deadline = None

    def timed_out(self, call_id: str, attempt: int, now: float) -> PendingCall | None:
        """The call if its attempt ``attempt`` on the current connection is still unanswered at ``now``."""
        call = self._calls.get(call_id)
        if (
            call is None
            or call.attempts != attempt
            or call.connection != self.connection
            or call.deadline is None
            or now < call.deadline
        ):
            return None
        return call

    def new_connection(self) -> tuple[list[PendingCall], list[PendingCall]]:
        """Start a new connection: returns (calls to send again in call order, superseded calls)."""
        self.connection += 1
        self._in_flight.clear()
        ordered = sorted(self._calls.values(), key=lambda c: c.order)
        superseded = [c for c in ordered if not c.resend]
        for call in superseded:
            del self._calls[call.id]
        for call in ordered:
            call.deadline = None
        return [c for c in ordered if c.resend], superseded

    def largest_in_flight(self) -> PendingCall | None:
        calls = [self._calls[i] for i in self._in_flight]
        return max(calls, key=lambda c: c.size, default=None)

    def drain(self) -> list[PendingCall]:
        """Remove and return every pending call (the client is stopping)."""
        calls = sorted(self._calls.values(), key=lambda c: c.order)
        self._calls.clear()
        self._in_flight.clear()
        return calls
