"""Issue 13: an event in the log that cannot be rendered never stops a stream.

``CommittedEvent.frame`` and ``as_push`` never raise: an event orjson cannot write (a row an
older server stored: 300 levels deep, a lone surrogate, a huge integer) becomes a
``system.skipped`` push at its own offset, logged once at ERROR with its stream and offset.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from realtime.streams.event_log import SKIPPED_DATA, SKIPPED_EVENT, CommittedEvent


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("data", [_nested(300), {"t": "\ud800"}, {"n": 10**30}])
def test_unrenderable_event_becomes_a_skipped_push_at_its_offset(data: dict[str, Any], caplog: Any) -> None:
    event = CommittedEvent("room:poison", 7, "message.new", data)
    with caplog.at_level(logging.ERROR, logger="realtime.event_log"):
        frame = orjson.loads(event.frame)
        push = event.as_push()
    assert frame == {"event": SKIPPED_EVENT, "stream": "room:poison", "offset": 7, "data": SKIPPED_DATA}
    assert push == frame
    assert event.skipped
    [record] = caplog.records  # rendered once, logged once
    assert (record.levelno, record.stream, record.offset) == (logging.ERROR, "room:poison", 7)


def test_renderable_event_is_not_skipped_and_not_logged(caplog: Any) -> None:
    event = CommittedEvent("room:fine", 1, "message.new", {"text": "hi"})
    with caplog.at_level(logging.ERROR, logger="realtime.event_log"):
        assert orjson.loads(event.frame)["data"] == {"text": "hi"}
        assert event.as_push()["data"] == {"text": "hi"}
    assert not event.skipped
    assert not caplog.records


def test_undecodable_row_is_a_skipped_placeholder() -> None:
    event = CommittedEvent.unreadable("room:poison", 3, "message.new")
    assert event.skipped
    assert event.as_push()["event"] == SKIPPED_EVENT
    assert orjson.loads(event.frame)["offset"] == 3
