"""``stream.presence`` and ``stream.signal`` (issue 17): who is in a stream, and ephemeral signals.

Presence itself is kept by the hub (``realtime/streams/presence.py``); these handlers answer
from it, set a member's metadata, and hand signals to it. Signals are not stored and not
replayed: each goes once to the stream's other current subscribers, on every server, and
a connection may send ``REALTIME_SIGNAL_RATE`` of them per second (bursts of one second's
worth); past that a signal is dropped with ``limit_exceeded``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any, Protocol

from realtime.client_events import client_event
from realtime.conf import realtime_settings
from realtime.protocol.errors import Forbidden, LimitExceeded, ValidationFailed
from realtime.protocol.schemas import StreamPresenceData, StreamSignalData
from realtime.protocol.streams import StreamName
from realtime.streams.fanout import Subscription, get_hub
from realtime.streams.presence import SIGNALS, presence_enabled

SIGNAL_MAX_BYTES = 1024
META_MAX_BYTES = 512


class PresenceConnection(Protocol):
    user_id: int
    subscriptions: dict[str, Subscription]


class SignalBucket:
    """A token bucket: ``rate`` signals per second, bursts of ``rate``. Time is passed in."""

    __slots__ = ("last", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


_buckets: weakref.WeakKeyDictionary[Any, SignalBucket] = weakref.WeakKeyDictionary()


def presence_stream(conn: PresenceConnection, raw: str) -> StreamName:
    """A readable stream that tracks presence, or the error that says why not."""
    name = StreamName.parse(raw)
    if not name.readable_by(conn.user_id):
        raise Forbidden(f"{name} belongs to another user")
    if not presence_enabled(name):
        raise ValidationFailed(
            f"data.stream: {name.kind} streams do not track presence", fields={"stream": "presence not enabled"}
        )
    return name


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


@client_event("stream.presence", schema=StreamPresenceData, idempotent=True)
async def stream_presence(conn: PresenceConnection, data: StreamPresenceData, ref: str | None) -> dict[str, Any]:
    """The members present now; with ``meta``, first set the caller's metadata (subscribers only)."""
    key = str(presence_stream(conn, data.stream))
    hub = get_hub()
    if data.meta is not None:
        if _size(data.meta) > META_MAX_BYTES:
            raise ValidationFailed(f"data.meta: at most {META_MAX_BYTES} bytes as JSON", fields={"meta": "too large"})
        sub = conn.subscriptions.get(key)
        if sub is None:
            raise Forbidden(f"subscribe to {key} before setting presence metadata")
        hub.presence.set_meta(sub, data.meta or None)
    return await hub.presence.snapshot(key)


@client_event("stream.signal", schema=StreamSignalData)
async def stream_signal(conn: PresenceConnection, data: StreamSignalData, ref: str | None) -> dict[str, Any]:
    """Deliver ``data`` once to the stream's other current subscribers; nothing is stored."""
    key = str(StreamName.parse(data.stream))
    sub = conn.subscriptions.get(key)
    if sub is None:
        raise Forbidden(f"subscribe to {key} before sending signals to it")
    if _size(data.data) > SIGNAL_MAX_BYTES:
        SIGNALS.labels("too_large").inc()
        raise ValidationFailed(f"data.data: at most {SIGNAL_MAX_BYTES} bytes as JSON", fields={"data": "too large"})
    now = asyncio.get_running_loop().time()
    bucket = _buckets.get(conn)
    if bucket is None:
        bucket = _buckets[conn] = SignalBucket(realtime_settings().signal_rate, now)
    if not bucket.take(now):
        SIGNALS.labels("rate_limited").inc()
        raise LimitExceeded("signal dropped: too many signals per second", limit="REALTIME_SIGNAL_RATE")
    SIGNALS.labels("sent").inc()
    get_hub().presence.signal(sub, data.data)
    return {"stream": key}
