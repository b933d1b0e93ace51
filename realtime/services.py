"""Writes that consumers and REST views share (HackSoft style: ``<entity>_<action>``).

Everything here is synchronous and transactional; async callers use the ``a``-prefixed
wrappers, which run in Django's database thread. Events are published to the hub only
after the transaction that wrote them has committed.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from realtime.models import Resource
from realtime.protocol.errors import Conflict, InvalidEnvelope, NotFound, ValidationFailed
from realtime.protocol.json_safety import dotted, json_problem
from realtime.protocol.streams import StreamName
from realtime.streams.event_log import Appended, AppendRequest, CommittedEvent, EventLog, now_iso_ms
from realtime.streams.group_commit import get_group_commit


def user_ref(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username}


async def amessage_publish(
    *, stream: StreamName, event: str, sender: Any, client_id: str | None, text: str
) -> Appended:
    """Commit a ``message.new`` / ``message.direct`` event (group-committed with concurrent ones);
    a repeated ``client_id`` of the same sender returns the original."""
    data = {"id": client_id, "sender": user_ref(sender), "text": text, "ts": now_iso_ms()}
    key = (sender.pk, client_id) if client_id is not None else None
    return await get_group_commit().append(AppendRequest(str(stream), event, data, key))


def resource_data_check(data: dict[str, Any]) -> None:
    """Refuse resource data that could not be stored, rendered or replayed everywhere (section 11).

    The doors (the WebSocket envelope, the REST serializers) refuse it first with the field
    named; this is the last line for any other caller of the services.
    """
    problem = json_problem(data)
    if problem is not None:
        path, reason = problem
        field = dotted(path, "data")
        raise ValidationFailed(f"{field}: {reason}", fields={field: reason})


def resource_create(*, data: dict[str, Any], user: Any) -> Resource:
    resource_data_check(data)
    return Resource.objects.create(data=data, version=1, updated_by=user)


def resource_update(
    *, resource_id: int, version: int, data: dict[str, Any], user: Any, client_id: str | None = None
) -> Appended:
    """Store ``data`` as version + 1 if ``version`` is current, and log ``resource.updated``.

    Of concurrent updates at one version exactly one matches the conditional UPDATE;
    the others get :class:`Conflict` with what is stored now. A retry with the same
    ``client_id`` returns the original outcome instead of conflicting with itself.
    """
    resource_data_check(data)
    key = (user.pk, client_id) if client_id is not None else None
    with transaction.atomic():
        if key is not None:
            existing = EventLog.existing(*key)
            if existing is not None and existing.event == "resource.updated" and existing.data.get("id") == resource_id:
                return Appended(existing, created=False)
            if existing is not None:
                raise InvalidEnvelope("id: already used by another publish of this user; use a new id")
        updated = Resource.objects.filter(pk=resource_id, version=version).update(
            data=data, version=F("version") + 1, updated_by=user, updated_at=timezone.now()
        )
        if not updated:
            current = Resource.objects.filter(pk=resource_id).values("version", "data").first()
            if current is None:
                raise NotFound(f"resource {resource_id} does not exist")
            raise Conflict(current_version=current["version"], current_data=current["data"])
        push = {"id": resource_id, "version": version + 1, "data": data, "updated_by": user_ref(user)}
        return EventLog.append_in_transaction(str(StreamName.resource(resource_id)), "resource.updated", push, key=key)


aresource_update = database_sync_to_async(resource_update)


async def _hub_publish(event: CommittedEvent) -> None:
    from realtime.streams.fanout import get_hub

    get_hub().publish(event)


def publish_from_sync(event: CommittedEvent) -> None:
    """Fan out a committed event from synchronous code (REST views run in a worker thread)."""
    async_to_sync(_hub_publish)(event)
