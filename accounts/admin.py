"""The user admin: Django's, plus whether each user is online now (issue 17).

"Online" is an open session on a live server (one that heartbeats on time,
``realtime/ops/server_registry.py``), as the server API's ``users/ID/`` answers it. The
count is one subquery per page (the ``(user, disconnected_at)`` index), not one query per
row; the live servers are read once per request.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from accounts.models import User
from realtime.models import ConnectionSession
from realtime.ops.server_registry import servers_by_liveness


def with_open_sessions(users: QuerySet[User]) -> QuerySet[User]:
    """``users`` annotated with ``open_sessions``: their open sessions on live servers."""
    alive, _ = servers_by_liveness()
    counts = (
        ConnectionSession.objects.filter(user=OuterRef("pk"), disconnected_at__isnull=True, server_id__in=alive)
        .order_by()
        .values("user")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return users.annotate(open_sessions=Coalesce(Subquery(counts, output_field=IntegerField()), Value(0)))


class OnlineFilter(admin.SimpleListFilter):
    title = "online"
    parameter_name = "online"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:  # type: ignore[type-arg]
        return [("yes", "online"), ("no", "offline")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(open_sessions__gt=0)
        if self.value() == "no":
            return queryset.filter(open_sessions=0)
        return queryset


@admin.register(User)
class AccountAdmin(UserAdmin):  # type: ignore[type-arg]
    # Django's columns and filters, then whether the user is online.
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "online", "open_sessions")
    list_filter = (OnlineFilter, "is_staff", "is_superuser", "is_active", "groups")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return with_open_sessions(super().get_queryset(request))

    @admin.display(description="online", boolean=True, ordering="open_sessions")
    def online(self, user: Any) -> bool:
        return int(user.open_sessions) > 0

    @admin.display(description="open sessions", ordering="open_sessions")
    def open_sessions(self, user: Any) -> int:
        return int(user.open_sessions)
