"""``manage.py realtime_stats``: what the service is doing now, from the database.

Open connections and message rates per server (as of each server's last heartbeat),
the busiest streams and the close codes of the last hour. ``--watch SECONDS`` refreshes
the view until Ctrl-C (on a terminal the screen is redrawn in place; otherwise each
snapshot follows the last under a timestamp line, for logs and scripts).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count
from django.utils import timezone

from realtime.models import ConnectionSession, Event, ServerInstance
from realtime.ops.server_registry import servers_by_liveness


class Command(BaseCommand):
    help = "Open connections and message rates per server, busiest streams, recent close codes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--minutes", type=int, default=60, help="window for streams and close codes")
        parser.add_argument("--top", type=int, default=10, help="how many streams to list")
        parser.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="refresh every SECONDS")
        parser.add_argument("--count", type=int, default=None, help="with --watch: stop after this many views")

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options["watch"]
        if interval is None:
            self._snapshot(options)
            return
        if interval <= 0:
            self.stderr.write("--watch takes a number of seconds above 0")
            raise SystemExit(2)
        redraw = self.stdout.isatty()
        shown = 0
        try:
            while options["count"] is None or shown < options["count"]:
                if redraw:
                    self.stdout.write("\x1b[H\x1b[2J", ending="")
                self.stdout.write(f"--- {timezone.now().isoformat(timespec='seconds')} (every {interval:g} s)")
                self._snapshot(options)
                shown += 1
                if options["count"] is None or shown < options["count"]:
                    time.sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write("")

    def _snapshot(self, options: dict[str, Any]) -> None:
        since = timezone.now() - timedelta(minutes=options["minutes"])
        alive, silent = servers_by_liveness()
        self.stdout.write("servers (as of their last heartbeat):")
        self.stdout.write("  server\tstate\topen\tin/s\tout/s\tlast heartbeat")
        for server in ServerInstance.objects.filter(stopped_at__isnull=True).order_by("server_id"):
            state = "alive" if server.server_id in alive else "silent" if server.server_id in silent else "?"
            self.stdout.write(
                f"  {server.server_id}\t{state}\t{server.open_connections}\t{server.messages_in_rate:.1f}"
                f"\t{server.messages_out_rate:.1f}\t{server.last_heartbeat.isoformat(timespec='seconds')}"
            )
        open_sessions = ConnectionSession.objects.filter(disconnected_at__isnull=True)
        self.stdout.write(f"open sessions recorded: {open_sessions.count()}")

        self.stdout.write(f"busiest streams, last {options['minutes']} min:")
        busiest = (
            Event.objects.filter(created_at__gte=since)
            .values("stream__name")
            .annotate(events=Count("id"))
            .order_by("-events")[: options["top"]]
        )
        for row in busiest:
            self.stdout.write(f"  {row['stream__name']}\t{row['events']}")

        self.stdout.write(f"close codes, last {options['minutes']} min:")
        codes = (
            ConnectionSession.objects.filter(disconnected_at__gte=since)
            .values("close_code", "close_reason")
            .annotate(n=Count("id"))
            .order_by("-n")
        )
        for code in codes:
            self.stdout.write(f"  {code['close_code']}\t{code['close_reason'] or '-'}\t{code['n']}")
