from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class ConnectionSession(models.Model):
    """One authenticated WebSocket connection, written on connect and on disconnect."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connection_sessions")
    server_id = models.CharField(max_length=200, db_index=True)
    remote_addr = models.CharField(max_length=64, blank=True)
    origin = models.CharField(max_length=255, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    connected_at = models.DateTimeField(default=timezone.now, db_index=True)
    disconnected_at = models.DateTimeField(null=True, blank=True, db_index=True)
    close_code = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    close_reason = models.CharField(max_length=123, blank=True)
    messages_in = models.PositiveBigIntegerField(default=0)
    messages_out = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ("-connected_at",)
        indexes = (models.Index(fields=("user", "disconnected_at")),)

    def __str__(self) -> str:
        return f"{self.user_id}@{self.server_id} {self.id}"

    @property
    def is_open(self) -> bool:
        return self.disconnected_at is None


class Stream(models.Model):
    """A named, append-only sequence of events with gapless offsets 1, 2, 3, ..."""

    name = models.CharField(max_length=200, unique=True)
    # Random and fixed at creation: a client resuming with another epoch knows the log was reset.
    epoch = models.CharField(max_length=32)
    head = models.BigIntegerField(default=0)
    # Events up to this offset were pruned; a resume from before it cannot be served.
    pruned_through = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """One committed event; ``(stream, offset)`` is its identity, ``(sender, client_id)`` its idempotency key."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="events")
    offset = models.BigIntegerField()
    event = models.CharField(max_length=64)
    data = models.JSONField()
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # NULL, not "", means "no idempotency key": the partial unique constraint skips NULLs.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("stream", "offset"), name="event_stream_offset_unique"),
            models.UniqueConstraint(
                fields=("sender", "client_id"),
                condition=models.Q(client_id__isnull=False),
                name="event_sender_client_id_unique",
            ),
        )

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.offset} {self.event}"


class Resource(models.Model):
    """A JSON document updated with optimistic concurrency on ``version``."""

    data = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=1)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"resource {self.pk} v{self.version}"


class ServerInstance(models.Model):
    """A ``manage.py serve`` process: registered at start, heartbeating while it runs."""

    server_id = models.CharField(max_length=200, unique=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)
    # Each server's own interval: audits judge it by its promise, not the auditor's settings.
    heartbeat_interval = models.FloatField(default=10.0)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Written with each heartbeat, for `manage.py realtime_stats`.
    open_connections = models.PositiveIntegerField(default=0)
    messages_in_total = models.PositiveBigIntegerField(default=0)
    messages_out_total = models.PositiveBigIntegerField(default=0)
    messages_in_rate = models.FloatField(default=0.0)
    messages_out_rate = models.FloatField(default=0.0)

    class Meta:
        ordering = ("server_id",)

    def __str__(self) -> str:
        return self.server_id
