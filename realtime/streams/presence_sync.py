"""Presence across servers: the writes, the bus messages, the re-reads (``presence.py`` uses it).

Every ``FLUSH_INTERVAL`` the hub writes what changed in its own members to the store
(``presence_store.py``), tells the other servers on the bus (``presence.delta``: the
changed entries, this server's new version and the one before), and pushes each followed
stream's net difference to its local subscribers. A delta whose previous version is not
the one a receiver holds (a message was lost) makes the receiver re-read the stream;
every half heartbeat interval each server refreshes its keys and re-reads the streams it
follows, so expired servers drop out and anything missed is repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from realtime.conf import realtime_settings
from realtime.protocol.envelope import render_push
from realtime.protocol.streams import StreamName
from realtime.streams.hub_state import StreamState
from realtime.streams.presence_store import STORE_ERRORS, Entry, PresenceStore, Write
from realtime.streams.presence_view import PRESENCE_PUSHES, PRESENCE_STREAMS, PRESENT_USERS, RemoteHub, View, by_id

logger = logging.getLogger("realtime.presence")

FLUSH_INTERVAL = 0.2
LOAD_TIMEOUT = 2.0
# A server's entries expire this many heartbeat intervals after its last refresh; it
# refreshes (and re-reads the others') every half interval: a dead one's vanish within two.
TTL_INTERVALS = 1.5
REFRESH_FRACTION = 0.5
# After the broker returns, a server missing from the store may just not have rewritten its
# entries yet (its own recovery probes with backoff): it is not taken for dead before this.
RECOVERY_GRACE = 6.0
READ_ERRORS: tuple[type[BaseException], ...] = (*STORE_ERRORS, TimeoutError)


class PresenceSync:
    """One hub's presence state and its synchronisation. ``send`` puts a message on the bus
    (None: no bus); ``store`` is Redis (None: one process, the local members are everything)."""

    def __init__(
        self,
        hub_id: str,
        streams: dict[str, StreamState],
        send: Callable[[str, dict[str, Any]], None] | None,
        degraded: Callable[[], bool],
        store: PresenceStore | None = None,
    ) -> None:
        self.hub_id = hub_id
        self._streams = streams
        self._send = send
        self._broker_degraded = degraded
        self._store = store
        self.store_failed = False
        self.views: dict[str, View] = {}
        self._versions = itertools.count(1)
        self._to_announce: set[str] = set()
        self._to_write: set[str] = set()
        self._rewrite_all = False
        self._recovered_at = -RECOVERY_GRACE
        self._told_degraded = False  # the degraded flag subscribers last got in presence.state
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pushes = 0  # presence.join / presence.leave frames handed to subscribers

    @property
    def degraded(self) -> bool:
        return self._broker_degraded() or self.store_failed

    def _schedule(self) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(FLUSH_INTERVAL, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        if self._flushing is not None:
            self._schedule()  # the previous flush still writes: the next interval takes these
            return
        self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            await self._write_changes()
            announce, self._to_announce = self._to_announce, set()
            for stream in announce:
                self._announce(stream)
            self._count()
            self._check_degraded()
        except Exception:
            logger.exception("presence flush failed")
        finally:
            self._flushing = None

    async def _write_changes(self) -> None:
        streams = list(self.views) if self._rewrite_all else list(self._to_write)
        full, self._rewrite_all = self._rewrite_all, False
        self._to_write.clear()
        writes: list[Write] = []
        prevs: dict[str, int] = {}
        for stream in streams:
            view = self.views.get(stream)
            if view is None:
                continue
            uids, view.changed = (set(view.local) if full else view.changed), set()
            present = {uid: view.local[uid].entry() for uid in uids if uid in view.local and view.local[uid].subs}
            gone = tuple(uid for uid in uids if uid not in present)
            for uid in gone:
                view.local.pop(uid, None)
            prevs[stream], view.version = view.version, next(self._versions)
            writes.append(Write(stream, view.version, present, gone, full))
        await self._store_writes(writes, full)
        for write in writes:
            self._publish(write, prevs[write.stream])
        for write in writes:  # a view nobody here follows any more is forgotten
            view = self.views.get(write.stream)
            if view is not None and not view.local and not self._followed(write.stream):
                del self.views[write.stream]

    async def _store_writes(self, writes: list[Write], full: bool) -> None:
        if self._store is None or not writes:
            return
        if self._broker_degraded():
            self._rewrite_all = True
            return
        empty = [w.stream for w in writes if not w.entries and (w.full or not self._has_local(w.stream))]
        try:
            await self._store.write([w for w in writes if w.stream not in empty])
            if empty:
                await self._store.drop(empty)
            if self.store_failed:
                self.store_failed = False
                logger.info("presence store recovered", extra={"event": "presence_store_up"})
        except STORE_ERRORS:
            if not self.store_failed:
                logger.warning("presence store unavailable", extra={"event": "presence_store_down"}, exc_info=True)
            self.store_failed = True
            self._rewrite_all = True
            self._schedule()

    def _publish(self, write: Write, prev: int) -> None:
        if self._send is None or self._broker_degraded():
            return
        message = {
            "type": "presence.delta",
            "origin": self.hub_id,
            "stream": write.stream,
            "version": write.version,
            "prev": prev,
            "full": write.full,
            "set": {str(uid): entry.encode() for uid, entry in write.entries.items()},
            "gone": list(write.gone),
        }
        self._send(StreamName.parse(write.stream).group, message)

    def _has_local(self, stream: str) -> bool:
        view = self.views.get(stream)
        return view is not None and any(local.subs for local in view.local.values())

    def _followed(self, stream: str) -> bool:
        state = self._streams.get(stream)
        return state is not None and bool(state.subs)

    def _announce(self, stream: str) -> None:
        view = self.views.get(stream)
        if view is None:
            return
        current = view.merged()
        before = view.announced
        joined = [u for uid, u in current.items() if uid not in before or before[uid]["meta"] != u["meta"]]
        left = [{"id": uid, "username": u["username"]} for uid, u in before.items() if uid not in current]
        view.announced, view.told = current, True
        state = self._streams.get(stream)
        subs = [sub for sub in state.subs if sub.active and sub.presence] if state is not None else []
        for event, users in (("presence.leave", left), ("presence.join", joined)):
            if not users or not subs:
                continue
            frame = render_push(event, {"stream": stream, "users": sorted(users, key=by_id)})
            for sub in subs:
                sub.push(frame)
            self.pushes += len(subs)
            PRESENCE_PUSHES.labels(event).inc(len(subs))

    def _count(self) -> None:
        PRESENT_USERS.set(sum(sum(1 for u in v.local.values() if u.subs) for v in self.views.values()))
        PRESENCE_STREAMS.set(len(self.views))

    async def _load(self, stream: str, view: View) -> None:
        try:
            await self._resync([stream])
        finally:
            view.announced, view.told = view.merged(), True
            if view.loaded is not None and not view.loaded.done():
                view.loaded.set_result(None)

    async def _resync(self, streams: list[str], delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        streams = [s for s in streams if s in self.views]
        if self._store is None or not streams or self._broker_degraded():
            return
        started = time.monotonic()
        try:
            stored = await asyncio.wait_for(self._store.read(streams), LOAD_TIMEOUT)
        except READ_ERRORS:
            logger.info("presence re-read failed", extra={"event": "presence_read_failed"}, exc_info=True)
            return
        for stream, hubs in stored.items():
            view = self.views.get(stream)
            if view is None:
                continue
            for hub, found in hubs.items():
                remote = view.remote.get(hub)
                if remote is None or found.version >= remote.version:
                    view.remote[hub] = RemoteHub(found.version, found.entries, started)
            if started - self._recovered_at < RECOVERY_GRACE:
                continue
            for hub in [h for h, r in view.remote.items() if h not in hubs and r.received_at < started]:
                del view.remote[hub]  # expired: its server died (or left while a message was lost)
            self._to_announce.add(stream)
        self._schedule()

    def _ensure_refresher(self) -> None:
        if self._store is not None and self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        assert self._store is not None
        while True:
            await asyncio.sleep(self._store.ttl / TTL_INTERVALS * REFRESH_FRACTION)
            if self._broker_degraded() or not self.views:
                continue
            held = [s for s in self.views if self._has_local(s)]
            try:
                if held:
                    await self._store.refresh(held)
            except STORE_ERRORS:
                self.store_failed = self._rewrite_all = True
                self._schedule()  # the flush retries the store, and tells subscribers it is degraded
                continue
            await self._resync(list(self.views))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Shutdown: take this server's entries out of the store (the others drop them at once)."""
        for handle in (self._flush_timer,):
            if handle is not None:
                handle.cancel()
        tasks = [t for t in (self._refresher, self._flushing, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for stream, view in self.views.items():  # the other servers drop ours at once
            self._publish(Write(stream, next(self._versions), {}, (), True), view.version)
        if self._store is not None:
            with contextlib.suppress(*READ_ERRORS):
                await asyncio.wait_for(self._store.drop(list(self.views)), 1.0)
            with contextlib.suppress(Exception):
                await self._store.close()

    def state_data(self, stream: str, users: dict[int, dict[str, Any]]) -> dict[str, Any]:
        return {"stream": stream, "users": sorted(users.values(), key=by_id), "degraded": self.degraded}

    def _check_degraded(self) -> None:
        """Presence became degraded or whole again (broker or store): a presence.state to every
        subscription of every followed stream says so."""
        degraded = self.degraded
        if degraded == self._told_degraded:
            return
        self._told_degraded = degraded
        for stream, view in self.views.items():
            state = self._streams.get(stream)
            users = view.announced if view.told else view.merged()  # what the next diffs start from
            frame = render_push("presence.state", self.state_data(stream, users))
            for sub in list(state.subs) if state is not None else ():
                if sub.active and sub.presence:
                    sub.push(frame)

    def _apply_delta(self, stream: str, view: View, message: dict[str, Any]) -> None:
        """Another server's ``presence.delta``: applied when it follows the version held."""
        hub, version, prev = str(message["origin"]), int(message["version"]), int(message.get("prev", 0))
        remote = view.remote.get(hub)
        have = remote.version if remote is not None else 0
        entries = {int(uid): e for uid, raw in message.get("set", {}).items() if (e := Entry.decode(raw)) is not None}
        if message.get("full") or have == prev:
            if remote is None or message.get("full"):
                remote = view.remote[hub] = RemoteHub(version, {}, 0.0)
            remote.entries.update(entries)
            for uid in message.get("gone", ()):
                remote.entries.pop(int(uid), None)
            remote.version, remote.received_at = version, time.monotonic()
            if not remote.entries:
                del view.remote[hub]
        elif version > have:
            self._spawn(self._resync([stream]))  # a change went missing: read the stream again
        self._to_announce.add(stream)
        self._schedule()


def presence_store(hub_id: str) -> PresenceStore | None:
    """The Redis store when ``REDIS_URL`` is set (several servers), else None (one process)."""
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    ttl = realtime_settings().server_heartbeat_interval * TTL_INTERVALS
    return PresenceStore.from_url(url, hub_id, ttl)
