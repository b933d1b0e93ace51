"""Run the ASGI application on the production server in this process (``manage.py serve``).


It binds the socket itself so that ``--port 0`` works (the real port is logged in
the ``listening on H:P`` line that launchers wait for), maps the REALTIME_*
settings onto the server's WebSocket limits and keepalive, and on SIGTERM/SIGINT
closes every connection with 1012 ``service_restart`` and waits, bounded, for
in-flight work to finish.

``--workers N`` (N > 1) keeps that socket in a supervisor process and runs N worker
processes on it (``realtime/server/workers.py``); each worker is a server of its own
(``hostname:port/1`` …) and the ``listening on`` line comes once, when all are ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator

import uvicorn
from django.conf import settings
from django.utils.module_loading import import_string

from realtime.conf import realtime_settings, server_id
from realtime.ops.server_registry import heartbeat_forever, server_register, server_stopped
from realtime.server.http import LimitedHttpProtocol
from realtime.server.websocket import RealtimeWebSocketProtocol
from realtime.streams.fanout import get_hub

# Seconds that shutdown waits for connections and handlers before cancelling them.
GRACEFUL_SHUTDOWN_TIMEOUT = 10

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


def http_protocol(max_connections: int, header_timeout: float) -> type[LimitedHttpProtocol]:
    return type(
        "ServeHttpProtocol",
        (LimitedHttpProtocol,),
        {"max_connections": max_connections, "header_timeout": header_timeout},
    )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class ReadyServer(uvicorn.Server):
    """uvicorn's server that says when it is ready: ``ready_line`` on stdout and stderr
    (a single process), or ``on_ready()`` (a worker, which tells its supervisor)."""

    def __init__(
        self, config: uvicorn.Config, ready_line: str | None, on_ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.ready_line = ready_line
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.heartbeat = asyncio.ensure_future(heartbeat_forever(server_id(), get_hub().count_local))
            # The plain line goes to both streams, so a launcher can wait on either; the
            # JSON log says "ready" rather than repeat it inside a JSON string.
            if self.ready_line is not None:
                for stream in (sys.stdout, sys.stderr):
                    stream.write(self.ready_line + "\n")
                    stream.flush()
            logging.getLogger("realtime.server").info("ready", extra={"server": server_id(), "event": "listening"})
            # A worker told to stop while starting is not ready: it goes straight to shutdown.
            if self.on_ready is not None and not self.should_exit:
                self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # After the handlers: what they committed is handed to the broker before the loop ends.
        await get_hub().close()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the stop signal after its graceful shutdown, so the process
        # would die of SIGTERM; a completed graceful stop is a normal exit (status 0).
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def serve_on(
    sock: socket.socket,
    ready_line: str | None,
    on_ready: Callable[[], None] | None = None,
    early_signals: list[int] | None = None,
    stop_signals: tuple[int, ...] = (),
    max_connections: int | None = None,
) -> None:
    """Register as ``server_id()``, serve on the bound ``sock`` until stopped, mark the registration stopped.

    ``early_signals`` (workers only) holds stop signals that arrived while the process was
    still setting up; from here on the ``stop_signals`` go to the server, and those are replayed.
    """
    realtime = realtime_settings()

    # The project's application by its setting, as Django's own servers find it: the transport
    # imports no application code.
    application = import_string(settings.ASGI_APPLICATION)
    config = uvicorn.Config(
        application,
        loop="uvloop",
        http=http_protocol(
            connection_limit(realtime.max_connections if max_connections is None else max_connections),
            realtime.http_header_timeout,
        ),
        ws=type("ServeWebSocketProtocol", (RealtimeWebSocketProtocol,), {"ping_rate": realtime.rate_limit}),
        ws_max_size=realtime.max_message_bytes,
        ws_ping_interval=realtime.heartbeat_interval,
        ws_ping_timeout=realtime.heartbeat_timeout,
        ws_per_message_deflate=False,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT,
    )
    leaked = server_register(server_id())
    if leaked:
        logging.getLogger("realtime.server").warning(
            "closed sessions left open by a previous process", extra={"server": server_id(), "sessions": leaked}
        )
    server = ReadyServer(config, ready_line, on_ready)
    if early_signals is not None:
        for stop in stop_signals:
            signal.signal(stop, server.handle_exit)
        for sig in early_signals:
            server.handle_exit(sig, None)
    try:
        server.run(sockets=[sock])
    finally:
        server_stopped(server_id())
