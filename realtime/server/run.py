"""Run the ASGI application on the production server in this process (``manage.py serve``).

The server is the project's own (docs/decisions.md, "Owning the server seam"): the bound
socket is served by ``loop.create_server`` on uvloop, one ``HttpConnection`` per accepted
TCP connection (``realtime/server/http.py``), which hands WebSocket upgrades to a
``WebSocketConnection`` (``realtime/server/websocket.py``). No other server library is
involved.

It binds the socket itself so that ``--port 0`` works (the real port is logged in the
``listening on H:P`` line that launchers wait for), maps the REALTIME_* settings onto the
server's WebSocket limits and keepalive, and on SIGTERM/SIGINT stops accepting, closes every
WebSocket with 1012 ``service_restart``, lets HTTP responses in flight finish and waits,
bounded by :data:`GRACEFUL_SHUTDOWN_TIMEOUT`, for the application's tasks; then it cancels
what is left and exits with status 0. A second SIGINT during that wait stops at once.

``--workers N`` (N > 1) keeps that socket in a supervisor process and runs N worker
processes on it (``realtime/server/workers.py``); each worker is a server of its own
(``hostname:port/1`` …) and the ``listening on`` line comes once, when all are ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable

import uvloop
from django.conf import settings
from django.utils.module_loading import import_string

from realtime.conf import realtime_settings, server_id
from realtime.ops.server_registry import heartbeat_forever, server_register, server_stopped
from realtime.server.gc_policy import GcPolicy
from realtime.server.http import HttpConnection
from realtime.server.proxy import TrustedProxies
from realtime.server.state import ASGIApp, ServerSettings, ServerState
from realtime.streams.fanout import get_hub

logger = logging.getLogger("realtime.server")

# Seconds that shutdown waits for connections and handlers before cancelling them.
GRACEFUL_SHUTDOWN_TIMEOUT = 10
# Pending connections the kernel queues before accept() (10,000 clients may arrive at once).
BACKLOG = 4096
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# File descriptors kept free of client connections when the connection limit is derived from
# the open-file limit: the database, the broker, log and metrics files, accept() itself.
RESERVED_FDS = 128

NEEDS_BROKER = (
    "--workers {n} needs REDIS_URL: worker processes share streams only through the Redis "
    "broker (without it each worker has its own in-memory channel layer, and a subscriber "
    "on one worker would never see what is published on another). Set REDIS_URL, or run "
    "with --workers 1."
)


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one: each connection is a descriptor, and a
    distribution's default soft limit (often 1024) would cap a server far below its memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connection_limit(configured: int) -> int:
    """``configured`` (REALTIME_MAX_CONNECTIONS or ``--limit-connections``), else what the
    process's open-file limit allows: past it accept() fails and nothing is answered at all."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - RESERVED_FDS)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def server_settings(max_connections: int | None = None) -> ServerSettings:
    """The REALTIME_* settings (and ``FORWARDED_ALLOW_IPS``) as the server's own."""
    realtime = realtime_settings()
    return ServerSettings(
        max_connections=connection_limit(realtime.max_connections if max_connections is None else max_connections),
        header_timeout=realtime.http_header_timeout,
        ws_max_size=realtime.max_message_bytes,
        ping_interval=realtime.heartbeat_interval,
        ping_timeout=realtime.heartbeat_timeout,
        ping_rate=realtime.rate_limit,
        trusted_proxies=TrustedProxies(os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")),
        handshake_slots=realtime.handshake_slots,
    )


class Listener:
    """Serves ``sock`` until a stop signal, then shuts down gracefully.

    Says when it is ready: ``ready_line`` on stdout and stderr (a single process), or
    ``on_ready()`` (a worker, which tells its supervisor).
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: ServerSettings,
        sock: socket.socket,
        ready_line: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.sock = sock
        self.ready_line = ready_line
        self.on_ready = on_ready
        self.stopping = False
        self.force = False
        self.stop_requested: asyncio.Event | None = None
        self.state: ServerState | None = None
        self.gc_policy: GcPolicy | None = None  # realtime/server/gc_policy.py, applied by serve_on

    def handle_signal(self, sig: int) -> None:
        if self.stopping and sig == signal.SIGINT:
            self.force = True  # a second Ctrl-C: stop now
        self.stopping = True
        if self.stop_requested is not None:
            self.stop_requested.set()

    async def serve(self, signals: tuple[int, ...] = STOP_SIGNALS, early: list[int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_signal, sig)
        for sig in early or ():
            self.handle_signal(sig)
        state = self.state = ServerState(self.app, self.settings, loop)
        if self.gc_policy is not None:
            self.gc_policy.start(loop, state)
        server = await loop.create_server(lambda: HttpConnection(state), sock=self.sock, backlog=BACKLOG)
        heartbeat = asyncio.ensure_future(heartbeat_forever(server_id(), get_hub().count_local))
        try:
            if not self.stopping:
                self.announce()
            await self.stop_requested.wait()
            await self.shutdown(server, state)
        finally:
            if self.gc_policy is not None:
                self.gc_policy.stop()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for sig in signals:
                loop.remove_signal_handler(sig)

    def announce(self) -> None:
        # The plain line goes to both streams, so a launcher can wait on either; the JSON log
        # says "ready" rather than repeat it inside a JSON string.
        if self.ready_line is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.write(self.ready_line + "\n")
                stream.flush()
        logger.info("ready", extra={"server": server_id(), "event": "listening"})
        if self.on_ready is not None:
            self.on_ready()

    async def shutdown(self, server: asyncio.AbstractServer, state: ServerState) -> None:
        server.close()  # no new connections
        for connection in list(state.connections):
            connection.shutdown()
        await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(self.wait_idle(state), GRACEFUL_SHUTDOWN_TIMEOUT)
        except TimeoutError:
            logger.warning(
                "graceful shutdown timed out; cancelling the rest",
                extra={"server": server_id(), "tasks": len(state.tasks), "connections": len(state.connections)},
            )
        for task in list(state.tasks):
            task.cancel()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=1.0)
        # After the handlers: what they committed is handed to the broker before the loop ends.
        await get_hub().close()

    async def wait_idle(self, state: ServerState) -> None:
        # Connections and tasks end in many places; this polls only while stopping.
        while (state.connections or state.tasks) and not self.force:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def serve_on(
    sock: socket.socket,
    ready_line: str | None,
    on_ready: Callable[[], None] | None = None,
    early_signals: list[int] | None = None,
    stop_signals: tuple[int, ...] = STOP_SIGNALS,
    max_connections: int | None = None,
) -> None:
    """Register as ``server_id()``, serve on the bound ``sock`` until stopped, mark the registration stopped.

    ``early_signals`` (workers only) holds stop signals that arrived while the process was
    still setting up; from here on the ``stop_signals`` go to the server, and those are replayed.
    """
    # The project's application by its setting, as Django's own servers find it: the transport
    # imports no application code.
    application = import_string(settings.ASGI_APPLICATION)
    listener = Listener(application, server_settings(max_connections), sock, ready_line, on_ready)
    leaked = server_register(server_id())
    if leaked:
        logger.warning(
            "closed sessions left open by a previous process", extra={"server": server_id(), "sessions": leaked}
        )
    # Everything loaded so far is long-lived: frozen out of the collector's reach (issue 19).
    listener.gc_policy = GcPolicy.from_settings(realtime_settings())
    listener.gc_policy.apply()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(listener.serve(stop_signals or STOP_SIGNALS, early_signals))
    finally:
        server_stopped(server_id())
