"""What every connection of one server process shares: the application, the settings, the
open connections (HTTP and WebSocket alike, for the connection limit and for shutdown) and
the running application tasks.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
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
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies("127.0.0.1,::1"))


class ServerState:
    __slots__ = ("app", "connections", "date", "date_second", "loop", "settings", "tasks")

    def __init__(self, app: ASGIApp, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = settings
        self.loop = loop
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
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
