"""What the OpenAPI generator (drf-spectacular) cannot read from the REST views by itself.

The resource views build their responses as dicts, so the serializers here only describe
them for ``/api/schema/``; nothing validates or renders through them. Importing this module
registers the bearer scheme of ``accounts.authentication.JWTAuthentication``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers


class BearerJWTScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.authentication.JWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Authorization: Bearer <access> from POST /api/auth/token/",
        }


class UserRefSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    username = serializers.CharField()


class ResourceSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    version = serializers.IntegerField(min_value=1)
    # A field called ``data`` shadows Serializer.data only for type checkers (see api.py).
    data = serializers.DictField()  # type: ignore[assignment]
    updated_by = UserRefSerializer(allow_null=True)


class ResourcePageSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ResourceSerializer(many=True)


class ConflictSerializer(serializers.Serializer[Any]):
    code = serializers.ChoiceField(choices=["conflict"])
    current_version = serializers.IntegerField()
    current_data = serializers.DictField()


class ErrorDetailSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField()
    code = serializers.CharField(required=False)


class FieldErrorsSerializer(serializers.Serializer[Any]):
    """A 400: each offending field maps to a list of messages; a body that is not JSON
    (or nested too deep) gets ``detail`` instead."""

    detail = serializers.CharField(required=False)

    data = serializers.ListField(child=serializers.CharField(), required=False)  # type: ignore[assignment]
    version = serializers.ListField(child=serializers.CharField(), required=False)
