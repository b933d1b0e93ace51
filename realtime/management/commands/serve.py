"""``manage.py serve``: the ASGI app on the project's own server (uvloop, httptools, websockets Sans-I/O).

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

import os
import socket
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.conf import set_server_id
from realtime.server.run import NEEDS_BROKER, bind_socket, raise_open_file_limit, serve_on
from realtime.server.workers import Supervisor


class Command(BaseCommand):
    help = "Run the realtime service on the production ASGI server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
        parser.add_argument(
            "--limit-connections",
            type=int,
            default=None,
            metavar="N",
            help="open connections (HTTP and WebSocket) per process; the next one gets 503 "
            "(default REALTIME_MAX_CONNECTIONS, else the open-file limit less a reserve)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="worker processes sharing the listening socket (default 1: this process serves); "
            "more than 1 needs REDIS_URL",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"]
        workers: int = options["workers"]
        if workers < 1:
            raise CommandError(f"--workers {workers}: must be at least 1")
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(NEEDS_BROKER.format(n=workers))
        limit: int | None = options["limit_connections"]
        if limit is not None:
            if limit < 1:
                raise CommandError(f"--limit-connections {limit}: must be at least 1")
            os.environ["REALTIME_MAX_CONNECTIONS"] = str(limit)  # worker processes read it
        raise_open_file_limit()  # before the workers start: they inherit it
        sock = bind_socket(host, options["port"])
        port = sock.getsockname()[1]
        ready_line = f"listening on {host}:{port}"
        if workers > 1:
            failure = Supervisor(sock, port=port, count=workers, ready_line=ready_line).run()
            if failure:
                raise CommandError(failure)
            return
        set_server_id(f"{socket.gethostname()}:{port}")
        serve_on(sock, ready_line, max_connections=limit)
