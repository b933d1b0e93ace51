"""A board has members and tasks; saving a new task publishes ``task.created`` on ``board:<id>``."""

from __future__ import annotations

from typing import Any

import realtime
from django.conf import settings
from django.db import models, transaction


class Board(models.Model):
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="boards")

    def __str__(self) -> str:
        return self.name

    @property
    def stream(self) -> str:
        return f"board:{self.pk}"


class Task(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # The id of the client message that created it: a message sent again after a reconnect
    # finds its task instead of creating a second one.
    client_ref = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "client_ref"], condition=~models.Q(client_ref=""), name="one_task_per_client_ref"
            )
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        created = self.pk is None
        # One transaction: the row and its event commit together, or neither does. publish()
        # appends inside it and delivers after the commit; its id makes the event one per task.
        with transaction.atomic():
            super().save(*args, **kwargs)
            if created:
                realtime.publish(f"board:{self.board_id}", "task.created", self.as_event(), id=f"task-{self.pk}")

    def as_event(self) -> dict[str, Any]:
        return {"id": self.pk, "title": self.title, "created_by": self.created_by_id}
