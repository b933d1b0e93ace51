"""REST API for resources (PROTOCOL.md section 7); shares its service functions with the WebSocket handlers."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.models import Resource
from realtime.protocol.errors import Conflict, NotFound
from realtime.selectors import resource_as_dict
from realtime.services import publish_from_sync, resource_create, resource_update


# A field called ``data`` shadows Serializer.data only for type checkers: DRF's metaclass
# moves declared fields off the class.
class ResourceCreateSerializer(serializers.Serializer[Any]):
    data = serializers.DictField()  # type: ignore[assignment]


class ResourceUpdateSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    data = serializers.DictField()  # type: ignore[assignment]


class ResourceListView(APIView):
    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        queryset = Resource.objects.select_related("updated_by").order_by("id")
        page = paginator.paginate_queryset(queryset, request, view=self) or []
        return paginator.get_paginated_response([resource_as_dict(r) for r in page])

    def post(self, request: Request) -> Response:
        serializer = ResourceCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        resource = resource_create(data=serializer.validated_data["data"], user=request.user)
        return Response(resource_as_dict(resource), status=status.HTTP_201_CREATED)


class ResourceDetailView(APIView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(resource_as_dict(get_object_or_404(Resource.objects.select_related("updated_by"), pk=pk)))

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
