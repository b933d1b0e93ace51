"""The hub's per-stream state, what it reads from the log, and how it steps over a hole.

Split from ``fanout.py`` so the head tracker (``head_tracker.py``) shares them without an
import cycle; ``fanout`` re-exports what handlers and consumers use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.db import database_sync_to_async

from realtime.protocol.envelope import render_push
from realtime.protocol.streams import StreamName
from realtime.streams.event_log import CommittedEvent, EventLog, StreamInfo
from realtime.streams.heads_query import stream_heads

logger = logging.getLogger("realtime.fanout")

REPLAY_PAGE = 500

read_since = database_sync_to_async(EventLog.read_since)
stream_info = database_sync_to_async(EventLog.stream_info)
read_heads = database_sync_to_async(stream_heads)


class LogReader(Protocol):
    """What the hub reads from the event log (the database; fakes in unit tests)."""

    async def read_since(self, stream: str, since: int, limit: int) -> list[CommittedEvent]: ...

    async def stream_info(self, stream: str) -> StreamInfo: ...

    async def heads(self, names: list[str]) -> dict[str, int]: ...


class DatabaseLog:
    async def read_since(self, stream: str, since: int, limit: int) -> list[CommittedEvent]:
        events: list[CommittedEvent] = await read_since(stream, since, limit)
        return events

    async def stream_info(self, stream: str) -> StreamInfo:
        info: StreamInfo = await stream_info(stream)
        return info

    async def heads(self, names: list[str]) -> dict[str, int]:
        heads: dict[str, int] = await read_heads(names)
        return heads


class Subscriber(Protocol):
    user_id: int
    password_hash: str
    session_key: str

    def enqueue(self, frame: str) -> bool: ...

    async def wait_for_room(self, frames: int, size: int = 0) -> bool: ...

    def replay_page_size(self) -> int: ...

    def control(self, message: dict[str, Any]) -> None: ...


@dataclass(eq=False, slots=True)
class Subscription:
    conn: Subscriber
    stream: str
    offset: int
    live: bool = False  # until then activate() reads offsets from the database instead
    active: bool = True
    # Asked for presence pushes and signals (``stream.subscribe`` ``"presence": true``): a
    # subscriber that did not ask receives only the contract's frames.
    presence: bool = False
    push: Callable[[str], bool] = field(init=False)  # conn.enqueue, looked up once

    def __post_init__(self) -> None:
        self.push = self.conn.enqueue


@dataclass(eq=False, slots=True)
class StreamState:
    name: StreamName
    head: int | None = None
    pending: dict[int, str] = field(default_factory=dict)
    subs: set[Subscription] = field(default_factory=set)
    ready: asyncio.Future[None] | None = None
    gap_task: asyncio.Task[None] | None = None
    info: StreamInfo | None = None  # as last read from the database

    @property
    def epoch(self) -> str:
        return self.info.epoch if self.info is not None else ""


def reset_frame(stream: str, offset: int, epoch: str) -> str:
    """``stream.reset``: the subscription skipped missing events up to ``offset``; reload, as after
    an ack with ``recovered: false``. No top-level stream/offset: it is not an event of the stream."""
    return render_push("stream.reset", {"stream": stream, "offset": offset, "epoch": epoch, "recovered": False})


def skip_hole(state: StreamState, upto: int) -> None:
    """Offsets ``head+1..upto`` are gone from the log: move past them, and tell the live
    subscriptions that were waiting for them (``stream.reset``)."""
    assert state.head is not None
    if upto <= state.head:
        return
    key = str(state.name)
    logger.warning(
        "events missing from the log skipped",
        extra={"event": "stream_hole", "stream": key, "from": state.head + 1, "to": upto},
    )
    previous, state.head = state.head, upto
    for stale in [o for o in state.pending if o <= upto]:
        del state.pending[stale]
    frame = reset_frame(key, upto, state.epoch)
    for sub in list(state.subs):
        if sub.live and sub.offset == previous:
            sub.offset = upto
            sub.push(frame)
