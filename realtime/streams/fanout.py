"""Hub: one per server process; delivers committed events to local subscriptions, in offset order.

- A publish is delivered to this process's subscribers directly (no broker round trip)
  and sent once over the channel layer to each other process that has subscribers of
  the stream: the hub, not each connection, joins the stream's group, so a broadcast
  is one bus message per process and one rendered frame for all local subscribers.
- Per stream the hub keeps ``head``, the last offset it delivered. Events are delivered
  strictly in order: an event that arrives early waits in ``pending`` while the
  missing offsets are read from the database, which is the source of truth; the broker
  may lose, delay or reorder messages without a subscriber seeing a gap or a duplicate.
- A subscription starts at an offset and is not live until it has caught up to the
  hub's head from the database (``activate``), so replay-then-live has no gap and no
  duplicate even while events are being published. Replay pages are bounded in frames
  and bytes, and each frame waits for room in the connection's queue.
- The broker is best effort; the heads are not. Twice a second the hub reads the committed
  heads of every stream it follows in one query (``head_tracker.py``) and reads from the
  log whatever it has still not delivered half a second later (at once while the broker
  is down): events the broker dropped, or was never given, arrive within about 1 s.
- A hole in the log (events deleted by an operator or pruned during a resume) is skipped
  once, with ``stream.reset`` to the subscriptions it cuts: never a query loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer
from django.db import Error as DatabaseError

from realtime.conf import realtime_settings
from realtime.loop.local import LoopLocal
from realtime.ops import metrics
from realtime.ops.account_watch import AccountWatch
from realtime.protocol.envelope import render_push
from realtime.protocol.streams import StreamName
from realtime.streams.bus_shards import hub_bus
from realtime.streams.event_log import CommittedEvent, StreamInfo
from realtime.streams.head_tracker import HeadTracker
from realtime.streams.hub_state import (
    REPLAY_PAGE,
    DatabaseLog,
    LogReader,
    StreamState,
    Subscriber,
    Subscription,
    read_since,
    skip_hole,
)
from realtime.streams.presence import Presence, presence_store
from realtime.streams.replay import replay_then_live

__all__ = ["Hub", "StreamState", "Subscriber", "Subscription", "get_hub", "read_since"]

logger = logging.getLogger("realtime.fanout")

# Every hub joins this group: announcements and kicks reach every server through it.
CONTROL_GROUP = "realtime.control"
METRICS_FOLD_INTERVAL = 1.0
GAP_FILL_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
FLUSH_TIMEOUT = 2.0


class Hub:
    def __init__(
        self, log: LogReader | None = None, layer: Any = None, ping: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.streams: dict[str, StreamState] = {}
        self.connections: set[Subscriber] = set()
        self._log: LogReader = log or DatabaseLog()
        self.heads = HeadTracker(self.streams, self._log, self.deliver, lambda: self.degraded)
        settings = realtime_settings()
        # A replay page's bytes: the reply budget, and never more than half the send queue.
        self.page_bytes = max(1, min(settings.max_reply_bytes, settings.send_queue_bytes // 2))
        explicit = layer is not None
        self._down: set[int] = set()  # the shards whose broker is lost
        # In-memory layer: one process, nothing to send to; local delivery is everything.
        self._bus = hub_bus(
            layer if explicit else get_channel_layer(), explicit, ping, self._on_bus_message, self._on_shard_health
        )
        self._tracker: asyncio.Task[None] | None = None
        bus = self._bus
        self.presence = Presence(
            self.id,
            self.streams,
            bus.send if bus is not None else None,
            lambda: self.degraded,
            None if explicit or bus is None else presence_store(self.id),
        )
        if self._bus is not None:
            metrics.BROKER_UP.set(1)
        self._control_joined = False
        self._accounts = AccountWatch(lambda: self.connections)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fold_timer: asyncio.TimerHandle | None = None

    @property
    def multi_process(self) -> bool:
        """Whether other server processes share this one's streams (a broker is configured)."""
        return self._bus is not None

    @property
    def degraded(self) -> bool:
        return self._bus is not None and not self._bus.healthy

    # Connections -----------------------------------------------------------------------

    def register(self, conn: Subscriber) -> None:
        self.connections.add(conn)
        self._accounts.start()
        if self._fold_timer is None:
            self._fold_tallies()
        if self._bus is not None and not self._control_joined:
            self._control_joined = True
            self._spawn(self._bus.join(CONTROL_GROUP))

    def _fold_tallies(self) -> None:
        metrics.fold_tallies()
        self._fold_timer = asyncio.get_running_loop().call_later(METRICS_FOLD_INTERVAL, self._fold_tallies)

    def unregister(self, conn: Subscriber, subscriptions: list[Subscription]) -> None:
        self.connections.discard(conn)
        for sub in subscriptions:
            self.detach(sub)

    def broadcast_local(self, message: dict[str, Any], predicate: Callable[[Subscriber], bool] | None = None) -> int:
        """Hand a control message (announce, kick) to local connections; returns how many took it."""
        count = 0
        for conn in list(self.connections):
            if predicate is None or predicate(conn):
                conn.control(message)
                count += 1
        return count

    def count_local(self, user_id: int | None = None) -> int:
        if user_id is None:
            return len(self.connections)
        return sum(1 for conn in self.connections if conn.user_id == user_id)

    def broadcast(
        self, message: dict[str, Any], user_id: int | None = None, session_ids: list[str] | None = None
    ) -> int:
        """A control message for every session (of ``user_id``, or in ``session_ids``) on every server.

        Returns how many local sessions took it; other servers apply it when the bus delivers.
        """
        local = self.broadcast_local(message, _target(user_id, session_ids))
        if self._bus is not None:
            envelope = {
                "type": "control",
                "origin": self.id,
                "message": message,
                "user_id": user_id,
                "session_ids": session_ids,
            }
            self._bus.send(CONTROL_GROUP, envelope)
        return local

    # Subscriptions ---------------------------------------------------------------------

    async def attach(self, name: StreamName, conn: Subscriber, fresh: bool = True) -> tuple[StreamState, StreamInfo]:
        """Make sure the hub follows ``name``; return its state (head known) and the stream's info.

        ``fresh=False`` serves the info from the hub when it already follows the stream (the
        epoch never changes; the head is the hub's): a subscribe from the head then costs no
        database round trip. Resumes ask for fresh info, to see the latest pruning.
        """
        key = str(name)
        # Waiting below, the stream's last subscriber may leave and the hub stop following it:
        # the state waited on is then no longer the hub's, and a subscription added to it
        # would never hear of an event again. So each wait is followed by a check, and on a
        # dropped state the hub starts following the stream afresh.
        while True:
            state = self.streams.get(key)
            if state is None:
                return await self._follow(name, key)
            if state.ready is not None and not state.ready.done():
                await asyncio.shield(state.ready)
                if self.streams.get(key) is not state:
                    continue
            if not fresh and state.info is not None and state.head is not None:
                return state, StreamInfo(key, state.info.epoch, state.head, state.info.pruned_through)
            info = await self._log.stream_info(key)
            if self.streams.get(key) is not state:
                continue
            state.info = info
            return state, info

    async def _follow(self, name: StreamName, key: str) -> tuple[StreamState, StreamInfo]:
        """Start following a stream: join its bus group and read its head. Until ``ready``
        is set no detach removes the state, so the caller subscribes to a followed stream."""
        state = self.streams[key] = StreamState(name)
        state.ready = asyncio.get_running_loop().create_future()
        try:
            if self._bus is not None:
                await self._bus.join(name.group)
            info = await self._log.stream_info(key)
        except BaseException as exc:
            del self.streams[key]
            state.ready.set_exception(exc)
            state.ready.exception()  # mark retrieved: waiters re-raise their own copy
            raise
        state.head = info.head
        state.info = info
        state.ready.set_result(None)
        self._drain(state)
        if self._tracker is None:
            self._tracker = asyncio.ensure_future(self.heads.run())
        return state, info

    def subscribe(self, state: StreamState, conn: Subscriber, start: int, presence: bool = False) -> Subscription:
        sub = Subscription(conn, str(state.name), start, presence=presence)
        state.subs.add(sub)
        self.presence.add(sub)
        return sub

    async def activate(self, sub: Subscription) -> None:
        """Replay from the database until the subscription reaches the hub's head, then go live
        (``replay.py``); a presence subscriber first gets the stream's members."""
        await self.presence.send_state(sub)  # presence.state right after the ack, before the replay
        await replay_then_live(sub, self.streams, self._log, self.page_bytes)

    def detach(self, sub: Subscription) -> None:
        sub.active = False
        self.presence.remove(sub)
        state = self.streams.get(sub.stream)
        if state is None:
            return
        state.subs.discard(sub)
        if not state.subs and (state.ready is None or state.ready.done()):
            del self.streams[sub.stream]
            if state.gap_task is not None:
                state.gap_task.cancel()
            if self._bus is not None:
                self._bus.leave(state.name.group)

    # Delivery --------------------------------------------------------------------------

    def publish(self, event: CommittedEvent) -> None:
        """Deliver a committed event here and send it once to every other process."""
        published_at = time.time()
        self.deliver(event.stream, event.offset, event.frame, published_at)
        if self._bus is not None:
            message = {
                "type": "fanout.event",
                "origin": self.id,
                "stream": event.stream,
                "offset": event.offset,
                "frame": event.frame,
                "published_at": published_at,
            }
            self._bus.send(StreamName.parse(event.stream).group, message)

    def deliver(self, stream: str, offset: int, frame: str, published_at: float | None = None) -> None:
        state = self.streams.get(stream)
        if state is None or (state.head is not None and offset <= state.head):
            return
        if published_at is not None:
            metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - published_at))
        state.pending[offset] = frame
        if state.head is not None:
            self._drain(state)

    def _drain(self, state: StreamState) -> None:
        assert state.head is not None
        pending = state.pending
        while state.head + 1 in pending:
            offset = state.head + 1
            frame = pending.pop(offset)
            state.head = offset
            # The per-subscriber loop is the fan-out's hot path: inlined, no call but the push.
            for sub in list(state.subs):
                if sub.live and sub.offset + 1 == offset:
                    sub.offset = offset
                    sub.push(frame)
        if pending:
            for stale in [o for o in pending if o <= state.head]:
                del pending[stale]
        if pending and state.gap_task is None:
            state.gap_task = task = asyncio.ensure_future(self._fill_gap(state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fill_gap(self, state: StreamState) -> None:
        """Offsets are missing before a pending event: read them from the log. A pending event
        is committed, so every offset below it was committed before it; what a second read
        still does not find was deleted, and is skipped (``skip_hole``)."""
        key = str(state.name)
        try:
            for attempt in itertools.count():
                await asyncio.sleep(GAP_FILL_DELAYS[min(attempt, len(GAP_FILL_DELAYS) - 1)])
                if not state.pending or self.streams.get(key) is not state:
                    return
                assert state.head is not None
                missing = min(state.pending) - state.head - 1
                try:
                    events = await self._log.read_since(key, state.head, min(missing, REPLAY_PAGE))
                except DatabaseError:
                    logger.warning("reading a gap from the log failed", exc_info=True, extra={"stream": key})
                    continue
                if not state.pending or self.streams.get(key) is not state:
                    return
                first = events[0].offset if events else min(state.pending)
                if first > state.head + 1 and attempt:
                    skip_hole(state, first - 1)
                for event in events:
                    state.pending.setdefault(event.offset, event.frame)
                self._drain(state)  # gap_task is still this task, so _drain schedules no other
        finally:
            state.gap_task = None

    # The bus ---------------------------------------------------------------------------

    def _on_bus_message(self, message: dict[str, Any]) -> None:
        if message.get("origin") == self.id:
            return
        if message.get("type") == "fanout.event":
            self.deliver(message["stream"], int(message["offset"]), message["frame"], message.get("published_at"))
        elif message.get("type") == "control":
            self.broadcast_local(message["message"], _target(message.get("user_id"), message.get("session_ids")))
        elif str(message.get("type")).startswith("presence."):
            self.presence.on_bus(message)

    def _on_shard_health(self, shard: int, healthy: bool) -> None:
        """Tell the sessions following the shard's streams (all, with one Redis); presence, the
        metric and the head tracker's urgency follow any shard down (docs/operations.md)."""
        before = bool(self._down)
        if healthy:
            self._down.discard(shard)
        else:
            self._down.add(shard)
        if before != bool(self._down):
            metrics.BROKER_UP.set(0 if self._down else 1)
            self.presence.on_broker(not self._down)
        if healthy:
            self._spawn(self._recovered(shard))
        else:
            self._tell_shard(shard, render_push("system.degraded", {"broker": "unavailable"}))

    async def _recovered(self, shard: int) -> None:
        await self.catch_up()
        self._tell_shard(shard, render_push("system.recovered", {"broker": "ok"}))

    def _tell_shard(self, shard: int, frame: str) -> None:
        message = {"type": "push", "frame": frame}
        assert self._bus is not None
        if self._bus.count == 1:
            self.broadcast_local(message)
            return
        for conn in self._bus.subscribers_of(shard, self.streams):
            conn.control(message)

    async def catch_up(self) -> None:
        """Deliver whatever the log holds past each followed stream's head (after a broker outage)."""
        await self.heads.check({}, urgent=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop; first hand every queued bus message to the broker (at shutdown: events committed
        before exit reach other processes at once, not only through their head tracking)."""
        if self._fold_timer is not None:
            self._fold_timer.cancel()
        metrics.fold_tallies()
        await self._accounts.close()
        await self.presence.close()
        if self._bus is not None:
            await self._bus.flush(FLUSH_TIMEOUT)
            await self._bus.close()
        if self._tracker is not None:
            self._tracker.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def _target(user_id: int | None, session_ids: list[str] | None) -> Callable[[Subscriber], bool] | None:
    if session_ids is not None:
        wanted = set(session_ids)
        return lambda conn: conn.session_key in wanted
    if user_id is not None:
        return lambda conn: conn.user_id == user_id
    return None


_hubs: LoopLocal[Hub] = LoopLocal(lambda loop: Hub())


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; tests get one per loop)."""
    return _hubs.get()
