"""``manage.py audit_connections``: find sessions left open by servers that are gone.

Prints open sessions per server and the servers that stopped heartbeating (silent for
1.5 of their intervals by the database's clock, or not registered). Without ``--dry-run``
it marks their sessions closed (1006 ``server_lost``); a server that beats between the
report and the close keeps its sessions (the close is fenced on the heartbeat it judged).
Running servers do the same for each other within two heartbeat intervals, so this is a
check more than a repair. Exit status 0 means nothing needed attention, 1 that leaked
sessions or dead servers were found (and fixed, unless ``--dry-run``): suitable for a
monitoring check.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime.ops.server_registry import connections_audit


class Command(BaseCommand):
    help = "Report open sessions per server and close those left by dead servers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        report = connections_audit(fix=not options["dry_run"])
        for server, count in sorted(report.open_by_server.items()):
            state = "dead" if server in report.dead_servers else "alive"
            self.stdout.write(f"{server}\t{state}\t{count} open")
        self.stdout.write(
            f"leaked sessions: {report.leaked}; closed now: {report.closed}; "
            f"dead servers: {', '.join(report.dead_servers) or 'none'}"
        )
        if report.leaked or report.dead_servers:
            sys.exit(1)
