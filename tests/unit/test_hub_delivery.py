"""Hub delivery with a fake event log (issue 14): head tracking, holes, replay paging.

Deterministic: the head tracker's checks are called directly, so no test waits for its
one-second interval; the log is an in-memory fake with the real ``LogReader`` interface.
"""

from __future__ import annotations

from typing import Any

import orjson

from realtime.protocol.streams import StreamName
from realtime.streams.event_log import CommittedEvent, StreamInfo
from realtime.streams.fanout import Hub
from tests.waiting import async_wait_until


class FakeLog:
    """Streams as lists of committed events; counts every query."""

    def __init__(self) -> None:
        self.events: dict[str, dict[int, CommittedEvent]] = {}
        self.heads_: dict[str, int] = {}
        self.reads: list[tuple[str, int, int]] = []
        self.head_queries: list[list[str]] = []

    def commit(self, stream: str, count: int = 1, size: int = 10) -> None:
        log = self.events.setdefault(stream, {})
        for _ in range(count):
            offset = self.heads_.get(stream, 0) + 1
            self.heads_[stream] = offset
            log[offset] = CommittedEvent(stream, offset, "message.new", {"text": "x" * size})

    def delete(self, stream: str, *offsets: int) -> None:
        for offset in offsets:
            del self.events[stream][offset]

    async def read_since(self, stream: str, since: int, limit: int) -> list[CommittedEvent]:
        self.reads.append((stream, since, limit))
        log = self.events.get(stream, {})
        return [log[o] for o in sorted(log) if o > since][:limit]

    async def stream_info(self, stream: str) -> StreamInfo:
        self.events.setdefault(stream, {})
        return StreamInfo(stream, "epoch1", self.heads_.setdefault(stream, 0), 0)

    async def heads(self, names: list[str]) -> dict[str, int]:
        self.head_queries.append(list(names))
        return {name: self.heads_[name] for name in names if name in self.heads_}


class FakeConn:
    """A subscriber whose queue holds ``room`` frames and ``room_bytes`` characters."""

    user_id = 1
    password_hash = ""
    session_key = "s"

    def __init__(self, page: int = 500) -> None:
        self.frames: list[dict[str, Any]] = []
        self.page = page
        self.waits: list[tuple[int, int]] = []

    def enqueue(self, frame: str) -> bool:
        self.frames.append(orjson.loads(frame))
        return True

    async def wait_for_room(self, frames: int, size: int = 0) -> bool:
        self.waits.append((frames, size))
        return True

    def replay_page_size(self) -> int:
        return self.page

    def control(self, message: dict[str, Any]) -> None:
        pass

    def offsets(self) -> list[int]:
        return [f["offset"] for f in self.frames if "offset" in f]


async def _follow(hub: Hub, stream: str, conn: FakeConn, since: int | None = None) -> Any:
    state, info = await hub.attach(StreamName.parse(stream), conn)
    sub = hub.subscribe(state, conn, info.head if since is None else since)
    await hub.activate(sub)
    return sub


async def _hub(log: FakeLog) -> Hub:
    hub = Hub(log=log)
    hub.heads.interval = 3600  # checks are called by the tests
    return hub


async def test_an_event_the_bus_never_brought_arrives_after_one_interval() -> None:
    """Fault tolerance: Broker failure -> an event committed elsewhere and never sent on the bus is
    read from the log when the hub is still behind it one head check later, not at the first
    (the broker gets its chance), with one heads query per check."""
    log = FakeLog()
    hub = await _hub(log)
    conn = FakeConn()
    await _follow(hub, "room:a", conn)
    log.commit("room:a")
    seen = await hub.heads.check({}, urgent=False)
    assert seen == {"room:a": 1}
    assert conn.offsets() == []
    assert log.reads == []
    await hub.heads.check(seen, urgent=False)
    assert conn.offsets() == [1]
    assert len(log.head_queries) == 2
    await hub.close()


async def test_an_event_that_arrives_on_the_bus_is_not_read_again() -> None:
    """Performance: in normal operation the head tracker reads nothing from the log."""
    log = FakeLog()
    hub = await _hub(log)
    conn = FakeConn()
    await _follow(hub, "room:a", conn)
    log.commit("room:a")
    seen = await hub.heads.check({}, urgent=False)
    hub.deliver("room:a", 1, log.events["room:a"][1].frame)  # the bus brings it meanwhile
    assert await hub.heads.check(seen, urgent=False) == {}
    assert conn.offsets() == [1]
    assert log.reads == []
    await hub.close()


async def test_degraded_polling_is_one_query_for_all_streams() -> None:
    """Broker failure: while the broker is down, catching 200 followed streams up costs one heads
    query per check (chunked in the database layer), plus one read per stream with new events."""
    log = FakeLog()
    hub = await _hub(log)
    conns = [FakeConn() for _ in range(200)]
    for i, conn in enumerate(conns):
        await _follow(hub, f"room:s{i}", conn)
    reads_before = len(log.reads)
    for i in range(0, 200, 50):
        log.commit(f"room:s{i}", 3)
    await hub.heads.check({}, urgent=True)
    assert len(log.head_queries) == 1
    assert len(log.head_queries[0]) == 200
    assert len(log.reads) - reads_before == 4
    assert [conns[i].offsets() for i in range(0, 200, 50)] == [[1, 2, 3]] * 4
    await hub.close()


async def test_a_hole_behind_the_head_is_skipped_once_with_a_reset() -> None:
    """Reconnect: offsets deleted from the log (2-3 of 5) end in `stream.reset` for the live
    subscription and delivery goes on after the hole: one read, never a loop."""
    log = FakeLog()
    hub = await _hub(log)
    conn = FakeConn()
    await _follow(hub, "room:h", conn)
    log.commit("room:h", 5)
    log.delete("room:h", 2, 3)
    hub.deliver("room:h", 1, log.events["room:h"][1].frame)
    await hub.heads.check({}, urgent=True)
    assert conn.offsets() == [1, 4, 5]
    resets = [f for f in conn.frames if f["event"] == "stream.reset"]
    assert resets == [
        {"event": "stream.reset", "data": {"stream": "room:h", "offset": 3, "epoch": "epoch1", "recovered": False}}
    ]
    assert len(log.reads) == 1
    await hub.close()


async def test_a_gap_fill_that_meets_a_hole_ends() -> None:
    """Reconnect: the bus brings offset 4 while 2-3 are deleted from the log: the gap fill
    skips them after a second look (well within a second) instead of reading forever."""
    log = FakeLog()
    hub = await _hub(log)
    conn = FakeConn()
    await _follow(hub, "room:g", conn)
    log.commit("room:g", 4)
    log.delete("room:g", 2, 3)
    hub.deliver("room:g", 1, log.events["room:g"][1].frame)
    hub.deliver("room:g", 4, log.events["room:g"][4].frame)
    await async_wait_until(lambda: 4 in conn.offsets(), timeout=1.0, message="the gap fill never ended")
    assert conn.offsets() == [1, 4]
    assert [f["data"]["offset"] for f in conn.frames if f["event"] == "stream.reset"] == [3]
    assert len(log.reads) <= 3
    await hub.close()


async def test_a_replay_that_meets_a_hole_goes_live_from_the_head() -> None:
    """Reconnect: a resume whose replay reaches deleted offsets gets the events before the hole,
    then `stream.reset` at the head (as an ack with recovered false would have said), then live."""
    log = FakeLog()
    hub = await _hub(log)
    log.commit("room:r", 10)
    log.delete("room:r", 5, 6)
    conn = FakeConn()
    sub = await _follow(hub, "room:r", conn, since=0)
    assert conn.offsets() == [1, 2, 3, 4]
    assert conn.frames[-1]["event"] == "stream.reset"
    assert conn.frames[-1]["data"]["offset"] == 10
    assert sub.live
    log.commit("room:r")
    hub.deliver("room:r", 11, log.events["room:r"][11].frame)
    assert conn.offsets()[-1] == 11
    await hub.close()


async def test_replay_pages_are_bounded_in_bytes_and_wait_per_frame() -> None:
    """Backpressure: Slow consumer -> a replay of large events reads pages of about the byte budget
    (not 500 frames of 60 KB), and waits for room for each frame with its size."""
    log = FakeLog()
    hub = await _hub(log)
    hub.page_bytes = 200_000
    log.commit("room:big", 40, size=60_000)
    conn = FakeConn()
    await _follow(hub, "room:big", conn, since=0)
    assert conn.offsets() == list(range(1, 41))
    limits = [limit for stream, _, limit in log.reads if stream == "room:big"]
    assert limits[0] == 16
    assert max(limits[1:]) <= 4
    assert len(conn.waits) == 40
    assert all(frames == 1 and size > 60_000 for frames, size in conn.waits)
    await hub.close()
