"""Routing the server's frames: replies to their calls, pushes to their subscription or to ``on_push``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from realtime_client.outbox import Outbox
from realtime_client.subscription import Subscription

PRESENCE_EVENTS = frozenset({"presence.state", "presence.join", "presence.leave"})

logger = logging.getLogger("realtime_client")

PushCallback = Callable[[dict[str, Any]], None]


class RouterOwner(Protocol):
    """What the router needs from its client."""

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The client's subscriptions, by stream."""

    def session_expiring(self) -> None:
        """``auth.expiring`` arrived: refresh the session if the client can."""


class FrameRouter:
    """Parses each frame and hands it on: a reply to the outbox, a stream's push to its
    subscription, ``flow.*`` to the outbox's gate, and every other push to the ``on_push``
    callbacks (``auth.expiring`` and ``stream.reset`` are acted on first)."""

    def __init__(self, owner: RouterOwner, outbox: Outbox) -> None:
        self._owner = owner
        self._outbox = outbox
        self.push_callbacks: list[PushCallback] = []

    def on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            logger.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        event = frame.get("event")
        if event in ("ack", "error"):
            self._outbox.on_reply(frame)
        elif isinstance(frame.get("stream"), str) and "offset" in frame:
            sub = self._owner.subscriptions.get(frame["stream"])
            if sub is not None:
                sub.push(frame)
        elif event == "session.welcome":
            return
        else:
            self._on_control(frame)

    def _on_control(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        data: dict[str, Any] = frame["data"] if isinstance(frame.get("data"), dict) else {}
        if event == "flow.pause":
            self._outbox.flow.server_pause(data.get("retry_after_ms"))
        elif event == "flow.resume":
            self._outbox.flow.resume()
        elif event == "auth.expiring":
            self._owner.session_expiring()
        elif event == "stream.reset" and isinstance(data.get("stream"), str):
            # A hole in the server's log: what was not delivered before data["offset"] is gone.
            sub = self._owner.subscriptions.get(data["stream"])
            if sub is not None:
                sub.reset(data)
        elif event in PRESENCE_EVENTS and isinstance(data.get("stream"), str):
            sub = self._owner.subscriptions.get(data["stream"])
            if sub is not None:
                sub.presence_push(str(event), data)
        for callback in list(self.push_callbacks):
            try:
                callback(frame)
            except Exception:
                logger.exception("on_push callback failed")
