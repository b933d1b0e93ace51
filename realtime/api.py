"""REST API for resources (PROTOCOL.md section 7); shares its service functions with the WebSocket handlers.

Resource data is checked by :mod:`realtime.protocol.json_safety` like every other door
(a 400 naming the field: ``{"data": ["data.a.b: lone surrogate"]}``), a body nested deeper
than Python's JSON reader recurses is a 400 rather than a 500, and list pages hold at
most ``REALTIME_MAX_PAGE_SIZE`` resources.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.conf import realtime_settings
from realtime.models import Resource
from realtime.openapi import (
    ConflictSerializer,
    ErrorDetailSerializer,
    FieldErrorsSerializer,
    ResourcePageSerializer,
    ResourceSerializer,
)
from realtime.protocol.errors import Conflict, NotFound
from realtime.protocol.json_safety import dotted, json_problem
from realtime.protocol.streams import StreamName
from realtime.publishing import PublishRefused, position, positions
from realtime.selectors import resource_as_dict
from realtime.services import publish_from_sync, resource_create, resource_update


class ResourcePagination(LimitOffsetPagination):
    """``?limit=`` above REALTIME_MAX_PAGE_SIZE gives a page of that size, as DRF caps it."""

    def __init__(self) -> None:
        super().__init__()
        self.max_limit = realtime_settings().max_page_size
        self.default_limit = min(self.default_limit or self.max_limit, self.max_limit)


class BoundedJSONParser(JSONParser):
    """DRF's parser, except that nesting deeper than Python's json reader recurses (a
    ``RecursionError``, which DRF lets through as a 500) is a parse error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deep") from None


class _ResourceData(serializers.DictField):
    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value: dict[str, Any] = super().to_internal_value(data)
        problem = json_problem(value)
        if problem is not None:
            path, reason = problem
            raise serializers.ValidationError(f"{dotted(path, 'data')}: {reason}")
        return value


# A field called ``data`` shadows Serializer.data only for type checkers: DRF's metaclass
# moves declared fields off the class.
class ResourceCreateSerializer(serializers.Serializer[Any]):
    data = _ResourceData()  # type: ignore[assignment]


class ResourceUpdateSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    data = _ResourceData()  # type: ignore[assignment]


_UNAUTHORIZED = {401: ErrorDetailSerializer}
_POSITION_PARAMETER = OpenApiParameter(
    "position",
    OpenApiTypes.BOOL,
    description="add position {offset, epoch} of resource:ID, read before the resource: "
    "stream.subscribe with since=offset and epoch then replays every later update",
)
_PAGE_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="page size (at most REALTIME_MAX_PAGE_SIZE, default 100)"),
    OpenApiParameter("offset", OpenApiTypes.INT, description="resources to skip"),
    _POSITION_PARAMETER,
]


def _wants_position(request: Request) -> bool:
    # Opt-in: the contract's resource shape (section 7) stays exactly as it was for everyone else.
    return request.query_params.get("position", "").lower() in ("1", "true", "yes")


def _positioned(resource: dict[str, Any], at: tuple[int, str]) -> dict[str, Any]:
    return {**resource, "position": {"offset": at[0], "epoch": at[1]}}


@extend_schema_view(
    get=extend_schema(
        operation_id="resources_list",
        summary="List resources",
        parameters=_PAGE_PARAMETERS,
        responses={200: ResourcePageSerializer, **_UNAUTHORIZED},
    ),
    post=extend_schema(
        summary="Create a resource (version 1)",
        request=ResourceCreateSerializer,
        responses={201: ResourceSerializer, 400: FieldErrorsSerializer, **_UNAUTHORIZED},
    ),
)
class ResourceListView(APIView):
    parser_classes = (BoundedJSONParser,)

    def get(self, request: Request) -> Response:
        paginator = ResourcePagination()
        queryset = Resource.objects.select_related("updated_by").order_by("id")
        page = paginator.paginate_queryset(queryset, request, view=self) or []
        if not _wants_position(request):
            return paginator.get_paginated_response([resource_as_dict(r) for r in page])
        # Positions first, then the rows read again: a row read before its position could miss
        # an update committed in between, at an offset the position already counts.
        at = positions([str(StreamName.resource(r.pk)) for r in page])
        fresh = queryset.in_bulk([r.pk for r in page])
        results = [
            _positioned(resource_as_dict(fresh[r.pk]), at[str(StreamName.resource(r.pk))])
            for r in page
            if r.pk in fresh
        ]
        return paginator.get_paginated_response(results)

    def post(self, request: Request) -> Response:
        serializer = ResourceCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        resource = resource_create(data=serializer.validated_data["data"], user=request.user)
        return Response(resource_as_dict(resource), status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="Read a resource",
        parameters=[_POSITION_PARAMETER],
        responses={200: ResourceSerializer, 404: ErrorDetailSerializer, **_UNAUTHORIZED},
    ),
    put=extend_schema(
        summary="Update a resource at its current version",
        description="Stores data as version + 1 and publishes resource.updated to resource:ID; "
        "a stale version is 409 with what is stored now.",
        request=ResourceUpdateSerializer,
        responses={
            200: ResourceSerializer,
            400: FieldErrorsSerializer,
            404: ErrorDetailSerializer,
            409: ConflictSerializer,
            **_UNAUTHORIZED,
        },
    ),
)
class ResourceDetailView(APIView):
    parser_classes = (BoundedJSONParser,)

    def get(self, request: Request, pk: int) -> Response:
        queryset = Resource.objects.select_related("updated_by")
        if not _wants_position(request):
            return Response(resource_as_dict(get_object_or_404(queryset, pk=pk)))
        # The position is read before the row: every update committed after that read has a
        # higher offset and is replayed by since=offset; one committed before it is in the row.
        try:
            at = position(str(StreamName.resource(pk)))
        except (NotFound, PublishRefused):  # no such resource, or an id no stream can name
            return Response({"code": "not_found", "detail": f"resource {pk} does not exist"}, status=404)
        return Response(_positioned(resource_as_dict(get_object_or_404(queryset, pk=pk)), at))

    def put(self, request: Request, pk: int) -> Response:
        serializer = ResourceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            appended = resource_update(
                resource_id=pk,
                version=serializer.validated_data["version"],
                data=serializer.validated_data["data"],
                user=request.user,
            )
        except NotFound:
            return Response({"code": "not_found", "detail": f"resource {pk} does not exist"}, status=404)
        except Conflict as exc:
            return Response({"code": "conflict", **exc.data}, status=status.HTTP_409_CONFLICT)
        publish_from_sync(appended.event)
        pushed = appended.event.data
        return Response(
            {
                "id": pushed["id"],
                "version": pushed["version"],
                "data": pushed["data"],
                "updated_by": pushed["updated_by"],
            }
        )
