"""Call ids and retry bookkeeping: same id across attempts, timeouts, reconnects, window."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_client.calls import CallTracker, PendingCall
from realtime_client.errors import RealtimeError
from realtime_client.ids import MAX_ID_LENGTH, IdGenerator, check_id


class Outcomes(list[tuple[Any, RealtimeError | None]]):
    pass


def pending(call_id: str, outcomes: Outcomes, *, resend: bool = True, size: int = 10) -> PendingCall:
    return PendingCall(call_id, "echo", f'{{"id":"{call_id}"}}', lambda a, e: outcomes.append((a, e)), resend, size)


def test_ids_are_unique_within_and_across_generators() -> None:
    first, second = IdGenerator(), IdGenerator()
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(0 < len(i) <= MAX_ID_LENGTH for i in ids)
    assert IdGenerator("p")() == "p-1"


@pytest.mark.parametrize("bad", ["", "x" * 65])
def test_check_id_refuses_what_the_server_would(bad: str) -> None:
    with pytest.raises(ValueError, match="call id"):
        check_id(bad)


def test_a_retry_keeps_the_frame_and_counts_attempts() -> None:
    tracker, outcomes = CallTracker(), Outcomes()
    call = pending("c-1", outcomes)
    tracker.add(call)
    tracker.mark_sent(call, now=0.0, timeout=5.0)
    assert tracker.timed_out("c-1", 1, now=4.9) is None
    assert tracker.timed_out("c-1", 1, now=5.0) is call
    frame = call.frame
    tracker.mark_sent(call, now=5.0, timeout=5.0)
    assert call.attempts == 2
    assert call.frame == frame
    assert tracker.timed_out("c-1", 1, now=20.0) is None  # an older attempt's timer
    assert tracker.in_flight == 1


def test_duplicate_pending_ids_are_refused() -> None:
    tracker, outcomes = CallTracker(), Outcomes()
    tracker.add(pending("same", outcomes))
    with pytest.raises(ValueError, match="already pending"):
        tracker.add(pending("same", outcomes))


def test_new_connection_resends_in_call_order_and_supersedes_internal_calls() -> None:
    tracker, outcomes = CallTracker(), Outcomes()
    a, internal, b = pending("a", outcomes), pending("i", outcomes, resend=False), pending("b", outcomes)
    for call in (a, internal, b):
        tracker.add(call)
    tracker.mark_sent(b, now=0.0, timeout=1.0)
    resend, superseded = tracker.new_connection()
    assert resend == [a, b]
    assert superseded == [internal]
    assert "i" not in tracker
    assert tracker.in_flight == 0
    assert tracker.timed_out("b", 1, now=10.0) is None  # its timer belongs to the old connection


def test_refused_call_leaves_the_window_and_replies_settle_once() -> None:
    tracker, outcomes = CallTracker(), Outcomes()
    call = pending("r", outcomes)
    tracker.add(call)
    tracker.mark_sent(call, now=0.0, timeout=1.0)
    tracker.mark_unsent(call)
    assert tracker.in_flight == 0
    assert tracker.timed_out("r", 1, now=5.0) is None
    popped = tracker.pop("r")
    assert popped is call
    call.finish({"ok": 1}, None)
    call.finish(None, RealtimeError("late"))
    assert outcomes == [({"ok": 1}, None)]
    assert tracker.pop("r") is None


def test_largest_in_flight_names_the_oversize_call() -> None:
    tracker, outcomes = CallTracker(), Outcomes()
    small, big, queued = pending("s", outcomes, size=10), pending("b", outcomes, size=5000), pending("q", outcomes)
    for call in (small, big, queued):
        tracker.add(call)
    tracker.mark_sent(small, 0.0, 1.0)
    tracker.mark_sent(big, 0.0, 1.0)
    assert tracker.largest_in_flight() is big
    assert tracker.drain() == [small, big, queued]
    assert len(tracker) == 0
