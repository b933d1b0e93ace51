"""``manage.py serve``: the ASGI app on the production server (uvicorn, websockets Sans-I/O).

It binds the socket itself so that ``--port 0`` works (the real port is logged in
the ``listening on H:P`` line that launchers wait for), maps the REALTIME_*
settings onto the server's WebSocket limits and keepalive, and on SIGTERM/SIGINT
closes every connection with 1012 ``service_restart`` and waits, bounded, for
in-flight work to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from django.core.management.base import BaseCommand, CommandParser

from realtime.asgi_server import RealtimeWebSocketProtocol
from realtime.conf import realtime_settings, server_id, set_server_id
from realtime.server_registry import heartbeat_forever, server_register, server_stopped

# Seconds that shutdown waits for connections and handlers before cancelling them.
GRACEFUL_SHUTDOWN_TIMEOUT = 10


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class ReadyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.heartbeat = asyncio.ensure_future(heartbeat_forever(server_id()))
            # The plain line goes to both streams, so a launcher can wait on either; the
            # JSON log says "ready" rather than repeat it inside a JSON string.
            for stream in (sys.stdout, sys.stderr):
                stream.write(self.ready_line + "\n")
                stream.flush()
            logging.getLogger("realtime.server").info("ready", extra={"server": server_id(), "event": "listening"})

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the stop signal after its graceful shutdown, so the process
        # would die of SIGTERM; a completed graceful stop is a normal exit (status 0).
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


class Command(BaseCommand):
    help = "Run the realtime service on the production ASGI server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"]
        sock = bind_socket(host, options["port"])
        port = sock.getsockname()[1]
        set_server_id(f"{socket.gethostname()}:{port}")
        settings = realtime_settings()

        from project.asgi import application

        config = uvicorn.Config(
            application,
            loop="uvloop",
            http="httptools",
            ws=RealtimeWebSocketProtocol,
            ws_max_size=settings.max_message_bytes,
            ws_ping_interval=settings.heartbeat_interval,
            ws_ping_timeout=settings.heartbeat_timeout,
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
        server = ReadyServer(config, f"listening on {host}:{port}")
        try:
            server.run(sockets=[sock])
        finally:
            server_stopped(server_id())
