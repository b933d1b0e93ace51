"""Presence: who is subscribed to a presence-enabled stream, per user, across every server.

- Each server process (its hub) holds the entries of its own sessions: per stream and
  user, the subscriptions and the metadata the user set. A user is present while any of
  their sessions on any server is subscribed: two tabs are one member.
- Changes are coalesced: every ``FLUSH_INTERVAL`` the hub writes what changed to the store
  (``presence_store.py``, Redis; keys expire unless the server's heartbeat refreshes them)
  and tells the other servers on the bus; then it compares each stream's merged view with
  what its local subscribers were last told and pushes the net difference, one
  ``presence.join`` and one ``presence.leave`` per stream per interval at most (a join and
  a leave within one interval cancel out).
- Versions: each server numbers its changes; a change that does not follow the version a
  receiver holds (a bus message was lost) makes the receiver read the stream from the store.
  Every refresh, each server re-reads the streams it follows: a dead server's expired
  entries disappear, and a lost message is repaired, within two heartbeat intervals.
- Without a broker (one process), the local entries are the whole truth. While the broker is
  away, presence is ``degraded`` (said in ``presence.state`` and the ``stream.presence``
  answer); when it returns every server rewrites its entries and re-reads the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from realtime.protocol.envelope import render_push
from realtime.protocol.streams import StreamName
from realtime.streams import presence_sync
from realtime.streams.hub_state import Subscription
from realtime.streams.presence_store import STORE_ERRORS
from realtime.streams.presence_sync import LOAD_TIMEOUT, PresenceSync, presence_store
from realtime.streams.presence_view import SIGNALS, LocalUser, RemoteHub, View, presence_enabled, username_of

__all__ = ["SIGNALS", "Presence", "presence_enabled", "presence_store"]


class Presence(PresenceSync):
    """The presence of one hub (server process): its sessions' members, answers and signals."""

    # Sessions ----------------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """A subscription of a presence-enabled stream started (``Hub.subscribe``)."""
        if not presence_enabled(StreamName.parse(sub.stream)):
            return
        view = self.views.get(sub.stream)
        if view is None:
            view = self.views[sub.stream] = View()
            if self._store is not None:
                view.loaded = asyncio.get_running_loop().create_future()
                self._spawn(self._load(sub.stream, view))
            self._ensure_refresher()
        uid = sub.conn.user_id
        local = view.local.get(uid)
        if local is None:
            local = view.local[uid] = LocalUser(username_of(sub.conn))
        local.subs.add(sub)
        self._changed(sub.stream, view, uid)

    def remove(self, sub: Subscription) -> None:
        """The subscription ended: unsubscribed, replaced, or its connection closed."""
        view = self.views.get(sub.stream)
        local = view.local.get(sub.conn.user_id) if view is not None else None
        if view is None or local is None or sub not in local.subs:
            return
        local.subs.discard(sub)
        self._changed(sub.stream, view, sub.conn.user_id)

    def set_meta(self, sub: Subscription, meta: dict[str, Any] | None) -> None:
        view = self.views.get(sub.stream)
        local = view.local.get(sub.conn.user_id) if view is not None else None
        if view is None or local is None:
            return
        local.meta, local.meta_at = meta, time.time()
        self._changed(sub.stream, view, sub.conn.user_id)

    def _changed(self, stream: str, view: View, uid: int) -> None:
        view.changed.add(uid)
        self._to_write.add(stream)
        self._to_announce.add(stream)
        self._schedule()

    # Answers -------------------------------------------------------------------------------

    async def send_state(self, sub: Subscription) -> None:
        """``presence.state`` to a new subscription that asked for presence, right after its ack
        (``Hub.activate``). One that did not ask goes straight to its replay: it never waits
        for the stream's members to be read from the store."""
        view = self.views.get(sub.stream)
        if view is None or not sub.presence:
            return
        await self._wait_loaded(view)
        if not view.told:
            view.announced, view.told = view.merged(), True
        # What the others were told: the next presence.join / presence.leave carry everyone,
        # this subscription too, from there to the current members.
        if sub.active:
            sub.push(render_push("presence.state", self.state_data(sub.stream, view.announced)))

    async def snapshot(self, stream: str) -> dict[str, Any]:
        """The ``stream.presence`` answer: the view this server follows, else read from the store."""
        view = self.views.get(stream)
        if view is not None:
            await self._wait_loaded(view)
            return self.state_data(stream, view.merged())
        found = View()
        if self._store is not None and not self._broker_degraded():
            with contextlib.suppress(*STORE_ERRORS):
                stored = await asyncio.wait_for(self._store.read([stream]), LOAD_TIMEOUT)
                now = time.monotonic()
                found.remote = {h: RemoteHub(e.version, e.entries, now) for h, e in stored[stream].items()}
        return self.state_data(stream, found.merged())

    def user_count(self, stream: str) -> int:
        view = self.views.get(stream)
        return len(view.merged()) if view is not None else 0

    async def _wait_loaded(self, view: View) -> None:
        if view.loaded is not None and not view.loaded.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(view.loaded), LOAD_TIMEOUT)

    # Signals -------------------------------------------------------------------------------

    def signal(self, sender: Subscription, data: Any) -> int:
        """``stream.signal``: to every other subscription of the stream, here and on other servers."""
        payload = {
            "stream": sender.stream,
            "from": {"id": sender.conn.user_id, "username": username_of(sender.conn)},
            "data": data,
        }
        frame = render_push("stream.signal", payload)
        if self._send is not None and not self._broker_degraded():
            group = StreamName.parse(sender.stream).group
            self._send(
                group, {"type": "presence.signal", "origin": self.hub_id, "stream": sender.stream, "frame": frame}
            )
        return self._push_signal(sender.stream, frame, sender)

    def _push_signal(self, stream: str, frame: str, sender: Subscription | None) -> int:
        state = self._streams.get(stream)
        count = 0
        for sub in list(state.subs) if state is not None else ():
            if sub is not sender and sub.active and sub.presence and sub.push(frame):
                count += 1
        return count

    # The bus -------------------------------------------------------------------------------

    def on_bus(self, message: dict[str, Any]) -> None:
        kind, stream = message.get("type"), message.get("stream")
        if not isinstance(stream, str):
            return
        if kind == "presence.signal":
            self._push_signal(stream, str(message["frame"]), None)
            return
        view = self.views.get(stream)
        if kind == "presence.delta" and view is not None:
            self._apply_delta(stream, view, message)

    def on_broker(self, healthy: bool) -> None:
        """The broker went away (presence is degraded) or came back (rewrite ours, re-read theirs)."""
        self._rewrite_all = True
        if healthy:
            self._recovered_at = time.monotonic()
            self._schedule()
            self._spawn(self._resync(list(self.views), delay=presence_sync.FLUSH_INTERVAL * 2))
        self._check_degraded()
