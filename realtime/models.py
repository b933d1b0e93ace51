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
