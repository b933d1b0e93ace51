"""The token endpoints: login (throttled), refresh (rotating), logout (revoking a refresh token)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView

from accounts.throttling import LoginAddressThrottle, LoginUsernameThrottle

# Response shapes for /api/schema/ only: simplejwt's serializers do not declare them.
_DETAIL = inline_serializer(
    "AuthError", {"detail": serializers.CharField(), "code": serializers.CharField(required=False)}
)
_TOKEN_PAIR = inline_serializer("TokenPair", {"access": serializers.CharField(), "refresh": serializers.CharField()})


@extend_schema(responses={200: _TOKEN_PAIR, 401: _DETAIL, 429: _DETAIL})
class LoginView(TokenObtainPairView):
    """POST {"username","password"} -> {"access","refresh"}; 429 when throttled."""

    throttle_classes = (LoginAddressThrottle, LoginUsernameThrottle)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # Every answer passes here, the 401 that simplejwt raises for wrong credentials too:
        # only failures count against the throttles (accounts/throttling.py).
        if response.status_code == 401:
            for throttle in self.get_throttles():
                if isinstance(throttle, (LoginAddressThrottle, LoginUsernameThrottle)):
                    throttle.record_failure(request, self)
        finalized: Response = super().finalize_response(request, response, *args, **kwargs)
        return finalized


@extend_schema(responses={200: _TOKEN_PAIR, 401: _DETAIL})
class RefreshView(TokenRefreshView):
    """POST {"refresh"} -> {"access","refresh"}: the refresh token used is blacklisted."""


@extend_schema(
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="{}: the token is revoked"), 401: _DETAIL}
)
class LogoutView(TokenBlacklistView):
    """POST {"refresh"} -> {}: that refresh token can no longer be used (401 if it already cannot)."""
