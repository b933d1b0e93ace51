"""The reorder buffer: offset order, duplicates dropped, gaps reported."""

from __future__ import annotations

from typing import Any

from realtime_client.reorder import ReorderBuffer


def frame(offset: int) -> dict[str, Any]:
    return {"event": "message.new", "stream": "room:a", "offset": offset, "data": {"n": offset}}


def offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [f["offset"] for f in frames]


def test_frames_before_start_are_held_then_released_in_order() -> None:
    buffer = ReorderBuffer()
    assert buffer.add(frame(12)) == []
    assert buffer.add(frame(11)) == []
    assert buffer.gap is None
    assert offsets(buffer.start(10)) == [11, 12]
    assert buffer.last == 12


def test_start_drops_what_is_at_or_below_the_position() -> None:
    buffer = ReorderBuffer()
    buffer.add(frame(3))
    buffer.add(frame(5))
    assert offsets(buffer.start(4)) == [5]
    assert buffer.duplicates == 1


def test_in_order_frames_pass_straight_through() -> None:
    buffer = ReorderBuffer()
    buffer.start(0)
    assert [offsets(buffer.add(frame(n))) for n in (1, 2, 3)] == [[1], [2], [3]]


def test_duplicates_are_dropped() -> None:
    buffer = ReorderBuffer()
    buffer.start(0)
    buffer.add(frame(1))
    assert buffer.add(frame(1)) == []
    buffer.add(frame(3))
    assert buffer.add(frame(3)) == []  # already held
    assert buffer.duplicates == 2


def test_a_gap_holds_later_frames_until_filled() -> None:
    buffer = ReorderBuffer()
    buffer.start(5)
    assert buffer.add(frame(8)) == []
    assert buffer.add(frame(9)) == []
    assert buffer.gap == (6, 8)
    assert offsets(buffer.add(frame(6))) == [6]
    assert buffer.gap == (7, 8)
    assert offsets(buffer.add(frame(7))) == [7, 8, 9]
    assert buffer.gap is None
    assert buffer.held == 0


def test_frames_without_an_integer_offset_are_ignored() -> None:
    buffer = ReorderBuffer()
    buffer.start(0)
    assert buffer.add({"event": "x", "offset": "1"}) == []
    assert buffer.add({"event": "x"}) == []
    assert buffer.last == 0
