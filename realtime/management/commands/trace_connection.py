"""``manage.py trace_connection SESSION_ID``: one connection's lifecycle and its last messages.

From the database: the session (user, server, address, origin, user agent, open/close
times, close code and reason, message counts) and the last events its user published
while it was open. From log files (``--log``, any number, JSON lines from any server):
every line carrying this connection's id, in time order.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from realtime.models import ConnectionSession, Event


class Command(BaseCommand):
    help = "Show a connection's lifecycle, its last published events and its log lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id")
        parser.add_argument("--log", action="append", default=[], help="a JSON log file to search (repeatable)")
        parser.add_argument("--last", type=int, default=20, help="how many events and log lines to show")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            session_id = uuid.UUID(options["session_id"])
        except ValueError:
            raise CommandError(f"{options['session_id']!r} is not a session id (a UUID)") from None
        session = ConnectionSession.objects.select_related("user").filter(pk=session_id).first()
        if session is None:
            raise CommandError(f"no session {session_id}")
        out = self.stdout.write
        out(f"session {session.pk}")
        out(f"  user        {session.user.username} (id {session.user_id})")
        out(f"  server      {session.server_id}")
        out(f"  remote      {session.remote_addr}  origin {session.origin or '-'}")
        out(f"  user agent  {session.user_agent or '-'}")
        out(f"  connected   {session.connected_at.isoformat()}")
        if session.disconnected_at is None:
            out("  state       open")
        else:
            out(
                f"  closed      {session.disconnected_at.isoformat()}  code {session.close_code}"
                f"  reason {session.close_reason or '-'}"
            )
        out(f"  messages    in {session.messages_in}, out {session.messages_out}")

        until = session.disconnected_at or timezone.now()
        events = list(
            Event.objects.filter(sender_id=session.user_id, created_at__gte=session.connected_at, created_at__lte=until)
            .select_related("stream")
            .order_by("-created_at")[: options["last"]]
        )
        out(f"events published by {session.user.username} while it was open (newest first): {len(events)}")
        for event in events:
            out(
                f"  {event.created_at.isoformat()}  {event.stream.name}#{event.offset}  {event.event}"
                f"  id={event.client_id or '-'}"
            )

        if options["log"]:
            lines = self._log_lines(options["log"], str(session.pk))
            out(f"log lines for conn {session.pk}: {len(lines)} (last {options['last']} shown)")
            for line in lines[-options["last"] :]:
                out("  " + line)

    @staticmethod
    def _log_lines(paths: list[str], conn: str) -> list[str]:
        found: list[tuple[str, str]] = []
        for path in paths:
            for raw in Path(path).read_text(errors="replace").splitlines():
                if conn not in raw:
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if entry.get("conn") == conn:
                    found.append((str(entry.get("ts", "")), raw))
        return [raw for _, raw in sorted(found)]
