"""GroupCommit's batching, the cached publish timestamp and room parsing, without a database.

The database call is replaced by a fake that records each batch and yields to the event
loop as the real thread hop does; what is tested is which publishes share a batch.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from realtime.connection.handlers import _room
from realtime.protocol.errors import ValidationFailed
from realtime.protocol.streams import StreamKind
from realtime.streams import group_commit
from realtime.streams.event_log import Appended, AppendRequest, CommittedEvent, iso_ms, now_iso_ms
from realtime.streams.group_commit import GroupCommit

ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


class FakeLog:
    """Stands in for the database thread: offsets per stream, batches recorded, failures on demand."""

    def __init__(self) -> None:
        self.batches: list[list[AppendRequest]] = []
        self.singles: list[AppendRequest] = []
        self.heads: dict[str, int] = {}

    def _commit(self, request: AppendRequest) -> Appended:
        if request.data.get("bad"):
            raise ValueError("cannot store this one")
        offset = self.heads[request.stream] = self.heads.get(request.stream, 0) + 1
        return Appended(CommittedEvent(request.stream, offset, request.event, request.data), created=True)

    async def append_batch(self, requests: list[AppendRequest]) -> list[Appended]:
        self.batches.append(requests)
        for _ in range(3):  # the hop to the database thread, the transaction, the hop back
            await asyncio.sleep(0)
        if any(r.data.get("bad") for r in requests):
            raise ValueError("the whole transaction rolls back")
        return [self._commit(r) for r in requests]

    async def append_one(
        self, stream: str, event: str, data: dict[str, object], *, sender_id: int | None, client_id: str | None
    ) -> Appended:
        request = AppendRequest(stream, event, data)
        self.singles.append(request)
        await asyncio.sleep(0)
        return self._commit(request)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    log = FakeLog()
    monkeypatch.setattr(group_commit, "_append_batch", log.append_batch)
    monkeypatch.setattr(group_commit, "_append_one", log.append_one)
    return log


async def test_publishers_released_by_a_batch_join_the_next_one_whole(fake: FakeLog) -> None:
    """Group commit: 50 connections, each publishing its next message as soon as the previous is
    acked (one command at a time per connection), commit together in every batch, even when a
    few of them started while the first batch was committing (which used to split every later
    round into a batch of the many and a batch of the few)."""
    commit = GroupCommit()

    async def connection(n: int) -> list[int]:
        offsets = []
        for i in range(10):
            appended = await commit.append(AppendRequest("room:x", "message.new", {"c": n, "i": i}))
            offsets.append(appended.event.offset)
        return offsets

    early = [asyncio.ensure_future(connection(n)) for n in range(48)]
    while not fake.batches:
        await asyncio.sleep(0)
    late = [asyncio.ensure_future(connection(n)) for n in range(48, 50)]
    results = await asyncio.gather(*early, *late)
    sizes = [len(batch) for batch in fake.batches]
    assert sizes[:2] == [48, 50], sizes
    assert sum(sizes) == 500
    assert len(sizes) <= 12, sizes
    assert sorted(offset for offsets in results for offset in offsets) == list(range(1, 501))
    assert all(offsets == sorted(offsets) for offsets in results)  # each connection's publishes stay in order


async def test_one_bad_publish_fails_alone(fake: FakeLog) -> None:
    """Group commit: a batch that fails as a whole is retried one by one; only the bad publish fails."""
    commit = GroupCommit()
    good_a = commit.append(AppendRequest("room:x", "message.new", {"n": 1}))
    bad = commit.append(AppendRequest("room:x", "message.new", {"bad": True}))
    good_b = commit.append(AppendRequest("room:x", "message.new", {"n": 2}))
    results = await asyncio.gather(good_a, bad, good_b, return_exceptions=True)
    assert isinstance(results[1], ValueError)
    assert [r.event.offset for r in (results[0], results[2]) if isinstance(r, Appended)] == [1, 2]
    assert [len(batch) for batch in fake.batches] == [3]
    assert len(fake.singles) == 3


async def test_a_lone_publish_is_committed_at_once(fake: FakeLog) -> None:
    """Group commit: at low load a batch is one publish, and the drainer stops when nothing is left."""
    commit = GroupCommit()
    appended = await commit.append(AppendRequest("room:y", "message.new", {"n": 1}))
    assert appended.event.offset == 1
    assert [len(batch) for batch in fake.batches] == [1]
    await asyncio.sleep(0)
    assert commit._drainer is not None
    assert commit._drainer.done()
    assert (await commit.append(AppendRequest("room:y", "message.new", {"n": 2}))).event.offset == 2


def test_now_iso_ms_is_now_in_the_contract_shape() -> None:
    """Frames: the cached ts is the current UTC time, to the millisecond, in the section 3 shape"""
    before = datetime.now(UTC)
    stamp = now_iso_ms()
    after = datetime.now(UTC)
    assert ISO_MS.fullmatch(stamp) is not None
    assert iso_ms(before) <= stamp <= iso_ms(after)


def test_now_iso_ms_formats_once_per_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames: publishes in one millisecond share the ts; the next millisecond gets its own, exactly"""
    clock = [1_795_521_541_120_400_000]  # 2026-11-24T11:59:01.120400Z in nanoseconds
    monkeypatch.setattr("realtime.streams.event_log.time.time_ns", lambda: clock[0])
    stamp = type(now_iso_ms)()
    assert stamp() == "2026-11-24T11:59:01.120Z"
    clock[0] += 500_000  # still .120
    assert stamp() == "2026-11-24T11:59:01.120Z"
    clock[0] += 500_000  # .121000
    assert stamp() == "2026-11-24T11:59:01.121Z"
    clock[0] += 878_599_999  # 11:59:01.999999999
    assert stamp() == "2026-11-24T11:59:01.999Z"
    clock[0] += 1
    assert stamp() == "2026-11-24T11:59:02.000Z"


def test_stream_parsing_is_cached_but_errors_are_not() -> None:
    """Streams: message.send accepts room:NAME only; parsed names are cached in
    StreamName.parse and a rejected name is rejected every time"""
    first = _room("room:lobby")
    assert first.kind is StreamKind.ROOM
    assert str(first) == "room:lobby"
    assert _room("room:lobby") is first
    for _ in range(2):
        with pytest.raises(ValidationFailed) as rejected:
            _room("user:7")
        assert rejected.value.data == {"fields": {"stream": "not a room"}}
        with pytest.raises(ValidationFailed):
            _room("room:Not Valid")
