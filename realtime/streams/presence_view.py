"""Presence's data: one stream's members as one server sees them, and its metrics.

``View.merged`` is the stream's member list: this server's users and every other server's
entries, one member per user (sessions added up, the latest ``meta`` wins).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from realtime.protocol.streams import StreamKind, StreamName
from realtime.streams.hub_state import Subscription
from realtime.streams.presence_store import Entry

# Prefixes of the namespaces that keep presence: ``room`` until the namespace registry
# installs the declared ones (``Namespace.presence``) when apps are ready.
_presence_prefixes: frozenset[str] = frozenset({StreamKind.ROOM.value})


def install_presence_prefixes(prefixes: frozenset[str]) -> None:
    """Track presence in exactly these namespaces (called once by ``realtime.namespaces.freeze``)."""
    global _presence_prefixes
    _presence_prefixes = prefixes


def presence_enabled(stream: StreamName) -> bool:
    """Whether ``stream`` tracks presence: its namespace was declared with ``presence=True``."""
    return str(stream.kind) in _presence_prefixes


def username_of(conn: Any) -> str:
    return str(getattr(getattr(conn, "user", None), "username", ""))


PRESENT_USERS = Gauge(
    "realtime_presence_members",
    "Members (user, stream) held by this server's sessions in presence-enabled streams",
    multiprocess_mode="livesum",
)
PRESENCE_STREAMS = Gauge(
    "realtime_presence_streams", "Presence-enabled streams this server follows", multiprocess_mode="livesum"
)
PRESENCE_PUSHES = Counter("realtime_presence_pushes", "presence.join / presence.leave frames sent", ["event"])
SIGNALS = Counter("realtime_signals", "stream.signal calls, by outcome", ["outcome"])


@dataclass(slots=True)
class LocalUser:
    username: str
    subs: set[Subscription] = field(default_factory=set)
    meta: dict[str, Any] | None = None
    meta_at: float = 0.0

    def entry(self) -> Entry:
        return Entry(len(self.subs), self.username, self.meta, self.meta_at)


@dataclass(slots=True)
class RemoteHub:
    version: int
    entries: dict[int, Entry]
    received_at: float


@dataclass(slots=True)
class View:
    """One followed stream: this server's users, the others', and what local subscribers were told."""

    local: dict[int, LocalUser] = field(default_factory=dict)
    remote: dict[str, RemoteHub] = field(default_factory=dict)
    announced: dict[int, dict[str, Any]] = field(default_factory=dict)
    told: bool = False  # ``announced`` was set: local subscribers have been told something
    changed: set[int] = field(default_factory=set)  # local users to write and send
    version: int = 0  # this server's version of the stream, as last written
    loaded: asyncio.Future[None] | None = None

    def merged(self) -> dict[int, dict[str, Any]]:
        users: dict[int, dict[str, Any]] = {}
        latest: dict[int, float] = {}
        shares = [(uid, local.entry()) for uid, local in self.local.items() if local.subs]
        shares += [(uid, entry) for hub in self.remote.values() for uid, entry in hub.entries.items()]
        for uid, entry in shares:
            if entry.sessions <= 0:
                continue
            user = users.get(uid)
            if user is None:
                users[uid] = {"id": uid, "username": entry.username, "sessions": entry.sessions, "meta": entry.meta}
                latest[uid] = entry.meta_at
                continue
            user["sessions"] += entry.sessions
            if entry.meta_at > latest[uid]:
                user["meta"], latest[uid] = entry.meta, entry.meta_at
        return users


def by_id(user: dict[str, Any]) -> int:
    return int(user["id"])
