"""The token endpoints: login (throttled), refresh (rotating), logout (revoking a refresh token)."""

from __future__ import annotations

from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView

from accounts.throttling import LoginAddressThrottle, LoginUsernameThrottle


class LoginView(TokenObtainPairView):
    """POST {"username","password"} -> {"access","refresh"}; 429 when throttled."""

    throttle_classes = (LoginAddressThrottle, LoginUsernameThrottle)


class RefreshView(TokenRefreshView):
    """POST {"refresh"} -> {"access","refresh"}: the refresh token used is blacklisted."""


class LogoutView(TokenBlacklistView):
    """POST {"refresh"} -> {}: that refresh token can no longer be used (401 if it already cannot)."""
