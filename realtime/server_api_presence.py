"""The server HTTP API's presence endpoints (issues 16 and 17): who is in a stream, and
whether a user is online.

- ``GET streams/STREAM/presence/`` answers what ``stream.presence`` answers: the members
  of a presence-enabled stream across every server. The server that answers asks its hub:
  the view it follows, else (with Redis) the presence store, so a member on another server
  is in the answer either way. ``degraded`` is true while the broker is away.
- ``GET users/ID/`` reads the session rows: the user's open sessions on live servers
  (heartbeating on time, ``realtime/ops/server_registry.py``), so it is cluster-wide
  without Redis. A session of a dead server is not counted even before it is reaped.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import User
from realtime import namespaces
from realtime.models import ConnectionSession
from realtime.ops.server_registry import servers_by_liveness
from realtime.protocol.errors import ValidationFailed
from realtime.server_api_auth import DENIED, ServerAPIView
from realtime.server_api_serializers import (
    ServerErrorSerializer,
    ServerFieldErrorsSerializer,
    StreamPresenceSerializer,
    UserStatusSerializer,
)
from realtime.streams.fanout import get_hub

_MAX_ID = 2**63 - 1


async def _presence(stream: str) -> dict[str, Any]:
    return await get_hub().presence.snapshot(stream)


def user_status(user_id: int) -> dict[str, Any] | None:
    """``{"id", "username", "online", "sessions", "servers"}`` of a user, or None if unknown."""
    user = User.objects.filter(pk=user_id).values("id", "username").first()
    if user is None:
        return None
    alive, _ = servers_by_liveness()
    per_server = dict(
        ConnectionSession.objects.filter(user_id=user_id, disconnected_at__isnull=True, server_id__in=alive)
        .values("server_id")
        .annotate(count=Count("id"))
        .values_list("server_id", "count")
    )
    sessions = sum(per_server.values())
    return {**user, "online": sessions > 0, "sessions": sessions, "servers": sorted(per_server)}


class StreamPresenceView(ServerAPIView):
    @extend_schema(
        operation_id="server_stream_presence",
        summary="Who is present in a presence-enabled stream, on every server",
        description="The stream.presence answer: one member per user, sessions added up over every "
        "server. A stream whose namespace keeps no presence is a 400 naming stream.",
        responses={200: StreamPresenceSerializer, 400: ServerFieldErrorsSerializer, **DENIED},
    )
    def get(self, request: Request, stream: str) -> Response:
        try:
            namespace, name = namespaces.resolve(stream)
        except ValidationFailed as exc:
            return Response({"stream": [exc.message.removeprefix("data.stream: ")]}, status=400)
        if not namespace.presence:
            return Response({"stream": [f"{namespace.prefix}: streams do not track presence"]}, status=400)
        return Response(async_to_sync(_presence)(str(name)))


class UserStatusView(ServerAPIView):
    @extend_schema(
        operation_id="server_user_status",
        summary="Whether a user is online: open sessions on live servers",
        description="Counted from the session rows of every server that heartbeats on time.",
        responses={200: UserStatusSerializer, 404: ServerErrorSerializer, **DENIED},
    )
    def get(self, request: Request, user_id: int) -> Response:
        status = user_status(user_id) if user_id <= _MAX_ID else None
        if status is None:
            return Response({"code": "not_found", "detail": f"user {user_id} does not exist"}, status=404)
        return Response(status)
