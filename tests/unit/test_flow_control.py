"""SendQueue: each connection's bounded outgoing queue (PROTOCOL.md section 9).

The queue is bounded by frames (``REALTIME_SEND_QUEUE``) and by size
(``REALTIME_SEND_QUEUE_BYTES``); ``put`` refuses past either bound and the caller then
closes with 1013 ``slow_consumer``. Replays are paced with ``has_room``.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.loop.flow_control import SendQueue

FAST = settings(max_examples=200, deadline=None, database=None)


def test_new_queue_is_empty():
    """Backpressure: a fresh connection has nothing queued"""
    queue = SendQueue(max_frames=3, max_bytes=100)
    assert len(queue) == 0
    assert not queue
    assert queue.bytes == 0
    assert queue.high_water == 0
    assert queue.has_room(3)


def test_frames_come_out_in_order():
    """Delivery: a stream's subscribers receive its events in offset order -> the queue is FIFO"""
    queue = SendQueue(max_frames=10, max_bytes=1000)
    frames = [f'{{"offset":{i}}}' for i in range(1, 6)]
    for frame in frames:
        assert queue.put(frame)
    assert [queue.pop() for _ in frames] == frames
    assert not queue


def test_put_refuses_past_the_frame_bound():
    """Backpressure: Buffer overflow -> put refuses past the frame bound"""
    queue = SendQueue(max_frames=3, max_bytes=10_000)
    assert all(queue.put("x") for _ in range(3))
    assert not queue.put("y")
    assert len(queue) == 3
    assert queue.bytes == 3
    assert [queue.pop() for _ in range(3)] == ["x", "x", "x"]  # the refused frame was not queued


def test_put_refuses_past_the_byte_bound():
    """Backpressure: Buffer overflow -> put refuses a frame that would pass the byte bound"""
    queue = SendQueue(max_frames=100, max_bytes=10)
    assert queue.put("a" * 6)
    assert queue.put("b" * 4)  # exactly at the bound is fine
    assert queue.bytes == 10
    assert not queue.put("c")
    assert len(queue) == 2
    assert queue.bytes == 10


def test_byte_bound_refusal_leaves_room_for_smaller_frames_later():
    """Backpressure: a refused put changes nothing; once drained, frames fit again"""
    queue = SendQueue(max_frames=100, max_bytes=10)
    assert queue.put("a" * 8)
    assert not queue.put("b" * 3)
    assert queue.put("c" * 2)
    assert queue.pop() == "a" * 8
    assert queue.put("b" * 3)
    assert queue.bytes == 5


def test_oversized_frame_is_accepted_only_when_nothing_is_queued():
    """Backpressure: a frame larger than the byte bound still goes out when nothing is ahead of it

    Otherwise one large event would close every subscriber with slow_consumer, and
    their resume would replay it and close them again, forever.
    """
    queue = SendQueue(max_frames=10, max_bytes=10)
    big = "z" * 50
    assert queue.put(big)
    assert queue.bytes == 50
    assert not queue.put("a")  # nothing more until it is sent
    assert queue.pop() == big
    assert queue.bytes == 0
    assert queue.put("a")
    assert not queue.put(big)  # not behind another frame


def test_pop_releases_bytes_and_frames():
    """Backpressure: sent frames give their room back"""
    queue = SendQueue(max_frames=2, max_bytes=10)
    assert queue.put("abcde")
    assert queue.put("fghij")
    assert not queue.put("k")
    assert queue.pop() == "abcde"
    assert queue.bytes == 5
    assert queue.put("k")
    assert queue.bytes == 6


def test_pop_of_empty_queue_raises():
    """Backpressure: the writer never sends a frame that was not queued"""
    queue = SendQueue(max_frames=2, max_bytes=10)
    with pytest.raises(IndexError):
        queue.pop()
    assert queue.bytes == 0


def test_same_frame_object_in_many_queues_is_counted_per_queue():
    """Backpressure: a broadcast puts one str in many queues; each counts its length once"""
    frame = '{"event":"message.new","data":{"text":"hi"}}'
    queues = [SendQueue(max_frames=5, max_bytes=1000) for _ in range(3)]
    for queue in queues:
        assert queue.put(frame)
    assert [queue.bytes for queue in queues] == [len(frame)] * 3
    assert queues[0].pop() is frame
    assert queues[0].bytes == 0
    assert queues[1].bytes == len(frame)


def test_clear_drops_everything():
    """Backpressure: slow_consumer close -> what was queued is dropped"""
    queue = SendQueue(max_frames=3, max_bytes=100)
    for frame in ("a", "bb", "ccc"):
        assert queue.put(frame)
    queue.clear()
    assert len(queue) == 0
    assert not queue
    assert queue.bytes == 0
    assert queue.has_room(3)
    assert queue.put("d" * 100)


def test_high_water_records_the_deepest_queue():
    """Operating: realtime_send_queue_high_water is each session's deepest queue (frames)"""
    queue = SendQueue(max_frames=5, max_bytes=100)
    for frame in ("a", "b", "c"):
        assert queue.put(frame)
    queue.pop()
    queue.pop()
    assert queue.put("d")
    assert queue.high_water == 3
    assert not queue.put("e" * 200)  # refused puts do not count
    assert queue.high_water == 3
    queue.clear()
    assert queue.high_water == 3  # read at close, after the queue was dropped


@pytest.mark.parametrize(
    ("queued", "asked", "expected"),
    [(0, 4, True), (0, 5, False), (2, 2, True), (2, 3, False), (4, 0, True), (4, 1, False)],
)
def test_has_room_follows_the_frame_bound(queued, asked, expected):
    """Backpressure: replays are paced by the queue -> has_room(n) iff n more frames fit"""
    queue = SendQueue(max_frames=4, max_bytes=10_000)
    for _ in range(queued):
        assert queue.put("x")
    assert queue.has_room(asked) is expected


def test_has_room_promise_is_kept_by_put():
    """Backpressure: a replay that waited for has_room(n) can put n frames without overflow"""
    queue = SendQueue(max_frames=6, max_bytes=10_000)
    assert queue.put("x")
    assert queue.put("x")
    assert queue.has_room(4)
    assert all(queue.put("page") for _ in range(4))
    assert not queue.has_room(1)
    assert not queue.put("x")


# --- properties -------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.text(max_size=30)),
        st.tuples(st.just("pop"), st.just("")),
        st.tuples(st.just("clear"), st.just("")),
    ),
    max_size=60,
)


@FAST
@given(st.integers(min_value=1, max_value=8), st.integers(min_value=1, max_value=80), operations)
def test_queue_matches_a_reference_model(max_frames, max_bytes, ops):
    """Backpressure: Buffer overflow -> bounds never exceeded; bytes equals the sum of queued lengths"""
    queue = SendQueue(max_frames, max_bytes)
    model: deque[str] = deque()
    deepest = 0
    for op, frame in ops:
        if op == "put":
            fits = len(model) < max_frames and (not model or sum(map(len, model)) + len(frame) <= max_bytes)
            assert queue.put(frame) is fits
            if fits:
                model.append(frame)
        elif op == "pop":
            if model:
                assert queue.pop() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    queue.pop()
        else:
            queue.clear()
            model.clear()
        deepest = max(deepest, len(model))

        assert len(queue) == len(model) <= max_frames
        assert bool(queue) is bool(model)
        assert queue.bytes == sum(len(f) for f in model)
        # The byte bound holds whenever more than one frame waits (one frame may be larger).
        assert queue.bytes <= max_bytes or len(queue) == 1
        assert queue.high_water == deepest
        assert queue.has_room(max_frames - len(model))
        assert not queue.has_room(max_frames - len(model) + 1)


@FAST
@given(st.lists(st.text(max_size=20), max_size=40))
def test_everything_accepted_comes_out_once_in_order(frames):
    """Delivery: every queued frame is sent exactly once, in order (nothing lost, nothing doubled)"""
    queue = SendQueue(max_frames=len(frames) + 1, max_bytes=10**6)
    for frame in frames:
        assert queue.put(frame)
    out = []
    while queue:
        out.append(queue.pop())
    assert out == frames
    assert queue.bytes == 0
