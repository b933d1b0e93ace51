"""``manage.py prune_events``: delete events older than their namespace's retention (PROTOCOL.md section 6).

Each stream loses a prefix of its log, never a hole: everything up to the newest
expired offset goes, and ``Stream.pruned_through`` records it so that a resume from
before it is answered with ``recovered:false`` instead of a silent gap.

How long a stream keeps its events is its namespace's ``retention`` (realtime/namespaces.py):
a duration, None (forever), or ``"setting"``, which is REALTIME_RETENTION_HOURS or
``--hours``. Streams of a namespace no longer declared follow the setting.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from realtime import namespaces
from realtime.conf import realtime_settings
from realtime.models import Event, Stream


def expired_events(default_cutoff: datetime, now: datetime) -> Q:
    """The events past their namespace's retention, as one condition on ``Event``."""
    expired = Q(pk__in=[])
    undeclared = Q(created_at__lt=default_cutoff)
    for namespace in namespaces.namespaces():
        in_namespace = Q(stream__name__startswith=f"{namespace.prefix}:")
        undeclared &= ~in_namespace
        if namespace.retention is None:
            continue
        cutoff = default_cutoff if namespace.retention == "setting" else now - namespace.retention
        expired |= in_namespace & Q(created_at__lt=cutoff)
    return expired | undeclared


def describe(hours: float) -> str:
    own = []
    for namespace in namespaces.namespaces():
        if namespace.retention is None:
            own.append(f"{namespace.prefix}: forever")
        elif namespace.retention != "setting":
            own.append(f"{namespace.prefix}: {namespace.retention.total_seconds() / 3600:g} h")
    return f"older than {hours:g} h" + (f"; {', '.join(own)}" if own else "")


class Command(BaseCommand):
    help = "Delete events older than their namespace's retention (default REALTIME_RETENTION_HOURS, 24)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=float,
            help="override REALTIME_RETENTION_HOURS for this run (namespaces with their own keep it)",
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would be deleted")

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["hours"] if options["hours"] is not None else realtime_settings().retention_hours
        now = timezone.now()
        expired = (
            Event.objects.filter(expired_events(now - timedelta(hours=hours), now))
            .values("stream_id")
            .annotate(through=Max("offset"))
            .order_by("stream_id")
        )
        streams = deleted = 0
        for row in expired:
            stream_id, through = row["stream_id"], row["through"]
            streams += 1
            if options["dry_run"]:
                deleted += Event.objects.filter(stream_id=stream_id, offset__lte=through).count()
                continue
            with transaction.atomic():
                count, _ = Event.objects.filter(stream_id=stream_id, offset__lte=through).delete()
                Stream.objects.filter(pk=stream_id, pruned_through__lt=through).update(pruned_through=through)
            deleted += count
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {deleted} events from {streams} streams ({describe(hours)})")
