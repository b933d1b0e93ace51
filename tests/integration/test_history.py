"""stream.history pages bounded in events and bytes (realtime/streams/history.py; PROTOCOL.md sections 4 and 11)."""

from __future__ import annotations

import orjson
import pytest

from realtime.streams.event_log import EventLog
from realtime.streams.history import history_page

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(stream: str, sizes: list[int]) -> None:
    for n, size in enumerate(sizes):
        EventLog.append(stream, "message.new", {"text": str(n % 10) * size})


def _offsets(page_frames: list[str]) -> list[int]:
    return [orjson.loads(frame)["offset"] for frame in page_frames]


def test_a_page_stops_before_the_event_that_would_pass_the_budget() -> None:
    """Section 11: at most REALTIME_MAX_REPLY_BYTES per page; more: true when events remain"""
    _publish("room:budget", [3000] * 10)
    page = history_page("room:budget", 0, 100, 9_000)
    assert _offsets(page.frames) == [1, 2]  # a third ~3 KB frame would pass 9,000 with the envelope
    assert page.more is True
    ack = orjson.dumps({"event": "ack", "ref": "r" * 64, "seq": 2**62, "data": page.ack("room:budget")})
    assert len(ack) <= 9_000
    assert orjson.loads(ack)["data"]["events"][0]["data"]["text"] == "0" * 3000


def test_an_event_larger_than_the_budget_still_goes_alone() -> None:
    """Section 11: a single event larger than the budget still goes alone"""
    _publish("room:huge", [50_000, 10])
    first = history_page("room:huge", 0, 100, 2_048)
    assert (_offsets(first.frames), first.more) == ([1], True)
    second = history_page("room:huge", 1, 100, 2_048)
    assert (_offsets(second.frames), second.more) == ([2], False)


def test_limit_and_more_without_the_byte_budget_in_play() -> None:
    """Section 4: at most limit events; more is true exactly when events after the last exist"""
    _publish("room:count", [5] * 5)
    assert (_offsets((p := history_page("room:count", 0, 5, 10**6)).frames), p.more) == ([1, 2, 3, 4, 5], False)
    assert (_offsets((p := history_page("room:count", 0, 4, 10**6)).frames), p.more) == ([1, 2, 3, 4], True)
    assert (_offsets((p := history_page("room:count", 5, 4, 10**6)).frames), p.more) == ([], False)
    assert (_offsets((p := history_page("room:never", 0, 4, 10**6)).frames), p.more) == ([], False)


def test_each_entry_is_exactly_the_push_frame_subscribers_received() -> None:
    """Section 4: history entries are exactly the push frames"""
    _publish("room:same", [7])
    (frame,) = history_page("room:same", 0, 10, 10**6).frames
    (event,) = EventLog.read_since("room:same", 0, 10)
    assert frame == event.frame
