"""Reads (HackSoft style): plain data out, no side effects."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from realtime.models import Resource
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
