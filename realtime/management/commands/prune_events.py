"""``manage.py prune_events``: delete events older than the retention period (PROTOCOL.md section 6).

Each stream loses a prefix of its log, never a hole: everything up to the newest
expired offset goes, and ``Stream.pruned_through`` records it so that a resume from
before it is answered with ``recovered:false`` instead of a silent gap.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from realtime.conf import realtime_settings
from realtime.models import Event, Stream


class Command(BaseCommand):
    help = "Delete events older than REALTIME_RETENTION_HOURS (default 24)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hours", type=float, help="override REALTIME_RETENTION_HOURS for this run")
        parser.add_argument("--dry-run", action="store_true", help="report what would be deleted")

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["hours"] if options["hours"] is not None else realtime_settings().retention_hours
        cutoff = timezone.now() - timedelta(hours=hours)
        expired = (
            Event.objects.filter(created_at__lt=cutoff)
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
        self.stdout.write(f"{verb} {deleted} events from {streams} streams (older than {hours:g} h)")
