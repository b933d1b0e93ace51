"""Reads (HackSoft style): plain data out, no side effects."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from realtime.models import ConnectionSession, Resource
from realtime.protocol.errors import NotFound


def resource_as_dict(resource: Resource) -> dict[str, Any]:
    updated_by = resource.updated_by
    return {
        "id": resource.pk,
        "version": resource.version,
        "data": resource.data,
        "updated_by": None if updated_by is None else {"id": updated_by.pk, "username": updated_by.username},
    }


def resource_get(resource_id: int) -> dict[str, Any]:
    resource = Resource.objects.select_related("updated_by").filter(pk=resource_id).first()
    if resource is None:
        raise NotFound(f"resource {resource_id} does not exist")
    return resource_as_dict(resource)


aresource_get = database_sync_to_async(resource_get)


def resource_exists(resource_id: int) -> bool:
    """Whether ``resource:ID`` may exist as a stream (subscribing or publishing creates it)."""
    return Resource.objects.filter(pk=resource_id).exists()


aresource_exists = database_sync_to_async(resource_exists)


def open_sessions_elsewhere(server_id: str, user_id: int | None = None) -> int:
    """Sessions open on other live servers (all, or one user's): what a broadcast there will reach."""
    from realtime.ops.server_registry import servers_by_liveness

    alive, _ = servers_by_liveness()
    alive.discard(server_id)
    sessions = ConnectionSession.objects.filter(disconnected_at__isnull=True, server_id__in=alive)
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    return sessions.count()


aopen_sessions_elsewhere = database_sync_to_async(open_sessions_elsewhere)
