from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from realtime.models import ConnectionSession, Event, Resource, ServerInstance, Stream


class OpenNowFilter(admin.SimpleListFilter):
    title = "open now"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:  # type: ignore[type-arg]
        return [("yes", "open"), ("no", "closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ConnectionSession]) -> QuerySet[ConnectionSession]:
        if self.value() == "yes":
            return queryset.filter(disconnected_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(disconnected_at__isnull=False)
        return queryset


@admin.register(ConnectionSession)
class ConnectionSessionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "user",
        "server_id",
        "remote_addr",
        "connected_at",
        "disconnected_at",
        "close_code",
        "close_reason",
        "messages_in",
        "messages_out",
    )
    list_filter = (OpenNowFilter, "server_id", "close_code", "connected_at")
    search_fields = ("id", "user__username", "remote_addr", "origin", "user_agent")
    list_select_related = ("user",)
    date_hierarchy = "connected_at"
    readonly_fields = [f.name for f in ConnectionSession._meta.fields]

    actions = ("close_sessions",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Close the selected open sessions (4403 kicked), on whichever server")
    def close_sessions(self, request: HttpRequest, queryset: QuerySet[ConnectionSession]) -> None:
        ids = [str(pk) for pk in queryset.filter(disconnected_at__isnull=True).values_list("id", flat=True)]
        if ids:
            async_to_sync(_close_sessions)(ids)
        self.message_user(request, f"Asked {len(ids)} open session(s) to close.")


async def _close_sessions(session_ids: list[str]) -> None:
    from realtime.streams.fanout import get_hub

    get_hub().broadcast({"type": "kick"}, session_ids=session_ids)


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "head", "pruned_through", "epoch", "created_at")
    search_fields = ("name",)
    readonly_fields = ("name", "epoch", "head", "pruned_through", "created_at")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("stream", "offset", "event", "sender", "client_id", "created_at")
    list_filter = ("event", "stream__name")
    # Payload search is a substring match on the JSON text (icontains works on both
    # SQLite and PostgreSQL jsonb cast to text).
    search_fields = ("stream__name", "client_id", "data")
    list_select_related = ("stream", "sender")
    ordering = ("stream", "-offset")
    readonly_fields = ("stream", "offset", "event", "data", "sender", "client_id", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "version", "updated_by", "updated_at")
    search_fields = ("=id", "data")
    list_select_related = ("updated_by",)
    readonly_fields = ("version", "updated_by", "created_at", "updated_at")


@admin.register(ServerInstance)
class ServerInstanceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("server_id", "pid", "started_at", "last_heartbeat", "stopped_at")
    readonly_fields = ("server_id", "pid", "started_at", "last_heartbeat", "stopped_at")
