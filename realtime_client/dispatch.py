"""Routing the server's frames: replies to their calls, pushes to their subscription or to ``on_push``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from realtime_client.calls import CallTracker
from realtime_client.errors import ServerError
from realtime_client.flow import FlowGate
from realtime_client.subscription import Subscription

logger = logging.getLogger("realtime_client")

RATE_LIMITED_PAUSE = 0.1  # when `rate_limited` arrives with no pause in force (it should not)


class FrameRouter:
    """The frame-handling half of :class:`~realtime_client.client.RealtimeClient`."""

    _calls: CallTracker
    _outbox: deque[str]
    _wake: asyncio.Event
    _window: asyncio.Event
    _push_callbacks: list[Callable[[dict[str, Any]], None]]
    _background: set[asyncio.Task[Any]]
    _token_provider: Callable[[], Awaitable[str]] | None
    _token: str | None
    flow: FlowGate
    subscriptions: dict[str, Subscription]
    refresh_on_expiring: bool

    async def call(self, event: str, data: dict[str, Any] | None = None, id: str | None = None) -> Any:
        raise NotImplementedError

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            logger.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        event = frame.get("event")
        if event in ("ack", "error"):
            self._on_reply(frame)
        elif isinstance(frame.get("stream"), str) and "offset" in frame:
            sub = self.subscriptions.get(frame["stream"])
            if sub is not None:
                sub.push(frame)
        elif event == "session.welcome":
            return
        else:
            self._on_control(frame)

    def _on_reply(self, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        call = self._calls.get(ref if isinstance(ref, str) else None)
        if call is None:
            if frame["event"] == "error":
                logger.warning("error reply to no pending call: %s", frame.get("data"))
            return  # a late duplicate reply to a retried call
        data = frame.get("data")
        if frame["event"] == "error":
            error_data: dict[str, Any] = data if isinstance(data, dict) else {}
            code = str(error_data.get("code", "error"))
            if code == "rate_limited" and self._calls.is_in_flight(call):
                # Refused, not processed: send it again once the pause is over.
                self._calls.mark_unsent(call)
                if not self.flow.paused:
                    self.flow.pause(RATE_LIMITED_PAUSE)
                self._outbox.append(call.id)
                self._wake.set()
                self._window.set()
                return
            self._calls.pop(call.id)
            self._window.set()
            call.finish(None, ServerError(code, error_data))
            return
        self._calls.pop(call.id)
        self._window.set()
        call.finish(data, None)

    def _on_control(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        data: dict[str, Any] = frame["data"] if isinstance(frame.get("data"), dict) else {}
        if event == "flow.pause":
            self.flow.server_pause(data.get("retry_after_ms"))
        elif event == "flow.resume":
            self.flow.resume()
        elif event == "auth.expiring" and self.refresh_on_expiring and self._token_provider is not None:
            self._spawn(self._refresh_session())
        elif event == "stream.reset" and isinstance(data.get("stream"), str):
            # A hole in the server's log: what was not delivered before data["offset"] is gone.
            sub = self.subscriptions.get(data["stream"])
            if sub is not None:
                sub.reset(data)
        for callback in list(self._push_callbacks):
            try:
                callback(frame)
            except Exception:
                logger.exception("on_push callback failed")

    async def _refresh_session(self) -> None:
        """Extend the session with a fresh token before it expires (``auth.refresh``)."""
        assert self._token_provider is not None
        try:
            token = await self._token_provider()
            self._token = token
            await self.call("auth.refresh", {"token": token})
        except Exception as exc:
            logger.warning("session refresh failed (the client reconnects on token_expired): %r", exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
