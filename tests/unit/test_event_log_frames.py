"""The pure parts of the event log: push frames and timestamps (PROTOCOL.md sections 3, 4 and 6).

No database access: only ``CommittedEvent.frame`` / ``as_push`` and ``iso_ms``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.protocol.envelope import render_push
from realtime.streams.event_log import CommittedEvent, iso_ms

FAST = settings(max_examples=200, deadline=None, database=None)

ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

MESSAGE = CommittedEvent(
    stream="room:lobby",
    offset=43,
    event="message.new",
    data={
        "id": "c-17",
        "sender": {"id": 7, "username": "alice"},
        "text": "hi",
        "ts": "2026-11-24T11:59:01.120Z",
    },
)

# JSON documents as orjson renders them: string keys, 64-bit integers, finite floats,
# text without lone surrogates.
json_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=15,
)
events = st.builds(
    CommittedEvent,
    stream=st.sampled_from(["room:lobby", "user:7", "resource:12", "room:" + "a" * 64]),
    offset=st.integers(min_value=1, max_value=2**63 - 1),
    event=st.sampled_from(["message.new", "message.direct", "resource.updated"]),
    data=st.dictionaries(json_text, json_values, max_size=5),
)


# --- push frames ------------------------------------------------------------------


def test_frame_is_the_contract_push():
    """Frames: server pushes name their stream and offset -> {"event","stream","offset","data"}"""
    parsed = json.loads(MESSAGE.frame)
    assert parsed == {
        "event": "message.new",
        "stream": "room:lobby",
        "offset": 43,
        "data": {
            "id": "c-17",
            "sender": {"id": 7, "username": "alice"},
            "text": "hi",
            "ts": "2026-11-24T11:59:01.120Z",
        },
    }
    assert "ref" not in parsed  # pushes carry no ref


def test_frame_keys_in_contract_order():
    """Frames: push frames read event, stream, offset, data (as in the section 3 example)"""
    assert list(json.loads(MESSAGE.frame)) == ["event", "stream", "offset", "data"]


def test_frame_is_rendered_once():
    """Delivery: a broadcast is rendered once and the same text is sent to every subscriber"""
    event = CommittedEvent("room:lobby", 1, "message.new", {"text": "hi"})
    first = event.frame
    assert event.frame is first


def test_frame_equals_render_push():
    """Frames: CommittedEvent.frame is the shared push renderer's output"""
    assert MESSAGE.frame == render_push(MESSAGE.event, MESSAGE.data, stream=MESSAGE.stream, offset=MESSAGE.offset)


def test_as_push_is_the_history_entry():
    """Events: stream.history events are each exactly the push frame that subscribers received"""
    assert MESSAGE.as_push() == json.loads(MESSAGE.frame)
    assert MESSAGE.as_push() == {
        "event": MESSAGE.event,
        "stream": MESSAGE.stream,
        "offset": MESSAGE.offset,
        "data": MESSAGE.data,
    }


def test_text_is_not_escaped_in_the_frame():
    """Text: text without markup kept exactly -> `Tom & Jerry`, `2 < 3` reach clients unescaped"""
    text = "Tom & Jerry, 2 < 3 \u00e9 \U0001f600"
    event = CommittedEvent("room:lobby", 2, "message.new", {"text": text})
    assert json.loads(event.frame)["data"]["text"] == text
    assert "&amp;" not in event.frame
    assert "&lt;" not in event.frame


def test_committed_event_is_immutable():
    """Delivery: each exactly once -> an event shared by many subscribers cannot be altered"""
    with pytest.raises(dataclasses.FrozenInstanceError):
        MESSAGE.offset = 44  # type: ignore[misc]


@FAST
@given(events)
def test_frame_round_trips_to_as_push(event):
    """Events: the history entry (as_push) equals the push frame subscribers received, for any data"""
    frame = event.frame
    assert isinstance(frame, str)
    parsed: dict[str, Any] = json.loads(frame)
    assert parsed == event.as_push()
    assert parsed["offset"] == event.offset
    assert parsed["stream"] == event.stream
    assert list(parsed) == ["event", "stream", "offset", "data"]


# --- timestamps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 24, 11, 59, 1, 120_000, tzinfo=UTC), "2026-11-24T11:59:01.120Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 1_999, tzinfo=UTC), "2026-01-02T03:04:05.001Z"),
        (datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "2026-12-31T23:59:59.999Z"),
    ],
)
def test_iso_ms_format(moment, expected):
    """Frames: message ts is UTC with milliseconds, e.g. 2026-11-24T11:59:01.120Z (truncated, never rolled over)"""
    assert iso_ms(moment) == expected


def test_iso_ms_of_now_matches_the_contract_shape():
    """Frames: the ts the server stamps on messages has the section 3 shape"""
    assert ISO_MS.fullmatch(iso_ms(timezone.now())) is not None


def utc_datetimes(first_year: int, last_year: int) -> st.SearchStrategy[datetime]:
    """UTC-aware datetimes (hypothesis takes naive bounds)."""
    low = datetime(first_year, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    high = datetime(last_year, 12, 31, tzinfo=UTC).replace(tzinfo=None)
    return st.datetimes(min_value=low, max_value=high, timezones=st.just(UTC))


@FAST
@given(utc_datetimes(1970, 9999))
def test_iso_ms_is_parseable_and_exact_to_the_millisecond(moment):
    """Frames: ts parses back to the same instant, to the millisecond"""
    text = iso_ms(moment)
    assert ISO_MS.fullmatch(text) is not None
    back = datetime.fromisoformat(text)
    assert back.tzinfo is not None
    assert back.utcoffset() == timedelta(0)
    assert back == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@FAST
@given(utc_datetimes(2000, 2100), utc_datetimes(2000, 2100))
def test_iso_ms_sorts_like_time(a, b):
    """Frames: ts strings order like the instants they stamp (millisecond resolution)"""
    if a.replace(microsecond=a.microsecond // 1000 * 1000) < b.replace(microsecond=b.microsecond // 1000 * 1000):
        assert iso_ms(a) < iso_ms(b)
