"""What every connection of one server process shares: the application, the settings, the
open connections (HTTP and WebSocket alike, for the connection limit and for shutdown), the
running application tasks and the admission of WebSocket handshakes (:class:`Admission`).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from realtime.server.proxy import TrustedProxies

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

# Seconds a kept-alive HTTP connection may sit idle between requests.
KEEP_ALIVE_TIMEOUT = 5.0
# WebSocket handshakes in the application at a time (issue 19): measured with
# loadtests/ramp.py, see Admission.
HANDSHAKE_SLOTS = 32
# Seconds a WebSocket close handshake (or a failed connection's linger) may take before the
# connection is aborted.
CLOSE_TIMEOUT = 10.0


class ClientDisconnected(OSError):
    """Raised by a ``send`` once the peer is gone."""


class Connection(Protocol):
    """One open connection, as the server's shutdown sees it."""

    def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_connections: int = 0  # 0: no limit
    header_timeout: float = 10.0
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT
    ws_max_size: int = 1_048_576
    ping_interval: float = 0.0  # 0: no keepalive ping
    ping_timeout: float = 0.0  # 0: a ping waits for no pong
    ping_rate: float = 0.0  # pings/s a client may send (0: not limited)
    close_timeout: float = CLOSE_TIMEOUT
    handshake_slots: int = HANDSHAKE_SLOTS  # 0: not limited
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies("127.0.0.1,::1"))


class Waiting(Protocol):
    """A connection whose upgrade request waits for a handshake slot."""

    def admitted(self) -> None: ...


class Admission:
    """At most ``slots`` WebSocket handshakes between their upgrade request and their answer.

    A handshake is the costliest step a connection takes (the request parsed again by the
    WebSocket protocol, the token verified, the session row written, the welcome): a burst
    of hundreds of them in one loop iteration is as long a stall for every established
    connection as a full collection was (issue 19). With ``slots`` bounded, the work queued
    ahead of an echo is bounded by ``slots`` handshakes, and the database batch that opens
    their sessions by as many rows. An upgrade request that finds no slot waits, in order of
    arrival, with nothing but its bytes read; a slot is held from the hand-over to the
    WebSocket connection until the application answers (accepted, refused) or the connection
    is lost, never by a client still sending its request head (``header_timeout`` bounds that).
    """

    __slots__ = ("active", "loop", "scheduled", "slots", "waiting")

    def __init__(self, slots: int, loop: asyncio.AbstractEventLoop) -> None:
        self.slots = slots
        self.loop = loop
        self.active: set[object] = set()  # the connections holding a slot
        self.waiting: deque[Waiting] = deque()
        self.scheduled = False

    def free(self) -> bool:
        """Whether an upgrade request arriving now may be handed over at once (none waits before it)."""
        return self.slots <= 0 or (len(self.active) < self.slots and not self.waiting)

    def hold(self, connection: object) -> None:
        self.active.add(connection)

    def wait(self, connection: Waiting) -> None:
        self.waiting.append(connection)

    def leave(self, connection: object) -> None:
        """``connection``'s handshake is answered or lost: its slot goes to the next in line,
        on the next loop iteration (not inside the application's ``send``)."""
        if connection in self.active:
            self.active.discard(connection)
            if self.waiting and not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.admit)

    def admit(self) -> None:
        self.scheduled = False
        while self.waiting and (self.slots <= 0 or len(self.active) < self.slots):
            # ``admitted`` hands the connection over, which holds a slot (or drops a lost one).
            self.waiting.popleft().admitted()


class ServerState:
    __slots__ = ("admission", "app", "connections", "date", "date_second", "loop", "settings", "tasks")

    def __init__(self, app: ASGIApp, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = settings
        self.loop = loop
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.admission = Admission(settings.handshake_slots, loop)
        self.date = b""
        self.date_second = -1

    def date_header(self) -> bytes:
        """The ``Date`` header's value, formatted once per second."""
        now = int(time.time())
        if now != self.date_second:
            self.date_second = now
            self.date = email.utils.formatdate(now, usegmt=True).encode()
        return self.date

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run an application coroutine as a task the shutdown waits for."""
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
