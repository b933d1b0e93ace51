"""The server HTTP API (issue 16): publish, disconnect and read streams from any language.

Mounted at ``/api/server/`` (docs/platform.md, "Server HTTP API"). Who may call and how
often is ``realtime/server_api_auth.py`` (an API key of ``REALTIME_API_KEYS`` or a staff
user's access token; ``REALTIME_SERVER_API_RATE``); presence and a user's online status
are ``realtime/server_api_presence.py``.

The endpoints call ``realtime.publish`` / ``realtime.position`` and map their errors, so
a stream, event, data or id is refused here exactly as from Django code. Disconnecting a
user is the admin's kick: a control message to every hub over the channel layer.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import User
from realtime.conf import realtime_settings, server_id
from realtime.models import Stream
from realtime.protocol.errors import NotFound
from realtime.publishing import PublishRefused, position, publish
from realtime.selectors import open_sessions_elsewhere
from realtime.server_api_auth import DENIED, ServerAPIView, ServerKey
from realtime.server_api_presence import StreamPresenceView, UserStatusView
from realtime.server_api_serializers import (
    DisconnectedSerializer,
    DisconnectSerializer,
    HistoryPageSerializer,
    HistoryQuery,
    PublishedManySerializer,
    PublishedSerializer,
    PublishManySerializer,
    PublishSerializer,
    ServerErrorSerializer,
    ServerFieldErrorsSerializer,
    StreamInfoSerializer,
)
from realtime.streams.fanout import get_hub
from realtime.streams.history import history_page

logger = logging.getLogger("realtime.server_api")

_MAX_ID = 2**63 - 1

# Helpers -------------------------------------------------------------------------------------


def _valid(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    validated: dict[str, Any] = serializer.validated_data
    return validated


def _refused(exc: PublishRefused, stream_field: str = "stream") -> Response:
    fields: dict[str, str] = exc.data["fields"]
    return Response({(stream_field if k == "stream" else k): [v] for k, v in fields.items()}, status=400)


def _not_found(detail: str) -> Response:
    return Response({"code": "not_found", "detail": detail}, status=404)


def _too_large(data: dict[str, Any]) -> Response | None:
    limit = realtime_settings().max_message_bytes
    try:
        size = len(orjson.dumps(data))
    except orjson.JSONEncodeError:
        return None  # not storable at all: publish names the field
    if size <= limit:
        return None
    detail = f"data: {size} bytes of JSON, more than REALTIME_MAX_MESSAGE_BYTES ({limit})"
    return Response({"code": "too_large", "detail": detail, "limit": "REALTIME_MAX_MESSAGE_BYTES"}, status=413)


def _epochs(streams: list[str]) -> dict[str, str]:
    return dict(Stream.objects.filter(name__in=streams).values_list("name", "epoch"))


async def _kick(user_id: int, reason: str) -> int:
    message = {"type": "kick"} if reason == "kicked" else {"type": "kick", "reason": reason}
    return get_hub().broadcast(message, user_id=user_id)


async def _subscribers_here(stream: str) -> int:
    state = get_hub().streams.get(stream)
    return 0 if state is None else sum(1 for sub in state.subs if sub.active)


def _multi_server() -> bool:
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


# Views ---------------------------------------------------------------------------------------


class PublishView(ServerAPIView):
    @extend_schema(
        operation_id="server_publish",
        summary="Publish one event to one stream",
        description="As realtime.publish(): committed, then fanned out to every server's subscribers. "
        "A retry with the same id returns the first offset and stores nothing.",
        request=PublishSerializer,
        responses={
            200: PublishedSerializer,
            400: ServerFieldErrorsSerializer,
            404: ServerErrorSerializer,
            413: ServerErrorSerializer,
            **DENIED,
        },
    )
    def post(self, request: Request) -> Response:
        body = _valid(PublishSerializer, request.data)
        refusal = _too_large(body["data"])
        if refusal is not None:
            return refusal
        stream = body["stream"]
        try:
            with transaction.atomic():
                offset = publish(stream, body["event"], body["data"], id=body.get("id"))
                epoch = _epochs([stream])[stream]
        except PublishRefused as exc:
            return _refused(exc)
        except NotFound as exc:
            return _not_found(exc.message)
        return Response({"stream": stream, "offset": offset, "epoch": epoch})


class PublishManyView(ServerAPIView):
    @extend_schema(
        operation_id="server_publish_many",
        summary="Publish one event to many streams, atomically",
        description="All or nothing, in one transaction: a refused stream (named as streams.N) "
        "publishes nothing. With an id, each stream's retry returns its first offset.",
        request=PublishManySerializer,
        responses={
            200: PublishedManySerializer,
            400: ServerFieldErrorsSerializer,
            404: ServerErrorSerializer,
            413: ServerErrorSerializer,
            **DENIED,
        },
    )
    def post(self, request: Request) -> Response:
        body = _valid(PublishManySerializer, request.data)
        refusal = _too_large(body["data"])
        if refusal is not None:
            return refusal
        streams: list[str] = body["streams"]
        offsets: dict[str, int] = {}
        # Row locks in one order whatever the request's order: two requests naming the same
        # streams in opposite orders must not deadlock.
        order = sorted(range(len(streams)), key=streams.__getitem__)
        index = order[0]
        try:
            with transaction.atomic():
                for index in order:
                    stream = streams[index]
                    offsets[stream] = publish(stream, body["event"], body["data"], id=body.get("id"))
                epochs = _epochs(streams)
        except PublishRefused as exc:
            return _refused(exc, stream_field=f"streams.{index}")
        except NotFound as exc:
            return _not_found(f"streams.{index}: {exc.message}")
        results = [{"stream": s, "offset": offsets[s], "epoch": epochs[s]} for s in streams]
        return Response({"results": results})


class DisconnectView(ServerAPIView):
    @extend_schema(
        operation_id="server_user_disconnect",
        summary="Close every open session of a user, on every server",
        description="The admin.kick mechanism: each session closes with 4403 and the reason given. "
        "sessions counts those on this server plus those open on other live servers.",
        request=DisconnectSerializer,
        responses={
            202: DisconnectedSerializer,
            400: ServerFieldErrorsSerializer,
            404: ServerErrorSerializer,
            **DENIED,
        },
    )
    def post(self, request: Request, user_id: int) -> Response:
        body = _valid(DisconnectSerializer, request.data)
        if user_id > _MAX_ID or not User.objects.filter(pk=user_id).exists():
            return _not_found(f"user {user_id} does not exist")
        # Counted before the kick: sessions elsewhere close (and leave the count) at once.
        elsewhere = open_sessions_elsewhere(server_id(), user_id=user_id) if _multi_server() else 0
        sessions = async_to_sync(_kick)(user_id, body["reason"]) + elsewhere
        auth = request.auth
        logger.info(
            "server API disconnect",
            extra={
                "user_id": user_id,
                "sessions": sessions,
                "reason": body["reason"],
                "caller": auth.fingerprint if isinstance(auth, ServerKey) else f"user {request.user.pk}",
            },
        )
        return Response({"user_id": user_id, "sessions": sessions}, status=202)


class StreamInfoView(ServerAPIView):
    @extend_schema(
        operation_id="server_stream_info",
        summary="A stream's head offset, epoch and subscriptions on this server",
        responses={200: StreamInfoSerializer, 400: ServerFieldErrorsSerializer, 404: ServerErrorSerializer, **DENIED},
    )
    def get(self, request: Request, stream: str) -> Response:
        try:
            offset, epoch = position(stream)
        except PublishRefused as exc:
            return _refused(exc)
        except NotFound as exc:
            return _not_found(exc.message)
        here = async_to_sync(_subscribers_here)(stream)
        return Response({"stream": stream, "offset": offset, "epoch": epoch, "subscribers_here": here})


class StreamHistoryView(ServerAPIView):
    @extend_schema(
        operation_id="server_stream_history",
        summary="A page of a stream's events after an offset (stream.history's ack data)",
        parameters=[HistoryQuery],
        responses={200: HistoryPageSerializer, 400: ServerFieldErrorsSerializer, 404: ServerErrorSerializer, **DENIED},
    )
    def get(self, request: Request, stream: str) -> HttpResponse:
        query = _valid(HistoryQuery, request.query_params)
        try:
            position(stream)  # the name's rules, and resource:ID of a missing resource
        except PublishRefused as exc:
            return _refused(exc)
        except NotFound as exc:
            return _not_found(exc.message)
        page = history_page(stream, query["since"], query["limit"], realtime_settings().max_reply_bytes)
        # The frames are spliced in as rendered (orjson fragments): exactly what subscribers got.
        return HttpResponse(orjson.dumps(page.ack(stream)), content_type="application/json")


urlpatterns = [
    path("publish/", PublishView.as_view(), name="server_publish"),
    path("publish-many/", PublishManyView.as_view(), name="server_publish_many"),
    path("users/<int:user_id>/", UserStatusView.as_view(), name="server_user_status"),
    path("users/<int:user_id>/disconnect/", DisconnectView.as_view(), name="server_user_disconnect"),
    path("streams/<str:stream>/", StreamInfoView.as_view(), name="server_stream_info"),
    path("streams/<str:stream>/history/", StreamHistoryView.as_view(), name="server_stream_history"),
    path("streams/<str:stream>/presence/", StreamPresenceView.as_view(), name="server_stream_presence"),
]
