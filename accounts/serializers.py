"""simplejwt's login and refresh serializers, tied to the account's token version (accounts/tokens.py)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import serializers
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken, Token

from accounts.models import User
from accounts.tokens import TOKEN_VERSION_CLAIM, token_is_current, token_version_of


class TokenObtainSerializer(serializers.TokenObtainPairSerializer):
    @classmethod
    def get_token(cls, user: Any) -> Token:
        token = super().get_token(user)
        token[TOKEN_VERSION_CLAIM] = user.token_version  # the access token copies it
        return token


class TokenRefreshSerializer(serializers.TokenRefreshSerializer):
    """Refuses a refresh token whose account is gone, inactive or whose password changed since;
    then simplejwt rotates it (ROTATE_REFRESH_TOKENS) and blacklists the one used."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = RefreshToken(attrs["refresh"])  # expired, forged or blacklisted: TokenError, 401
        try:
            user_id = int(refresh[api_settings.USER_ID_CLAIM])
            version = token_version_of(refresh.payload)
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("Token contained no valid user or token version") from None
        user = User.objects.filter(pk=user_id).first()
        if user is None or not user.is_active:
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account")
        if not token_is_current(version, user):
            raise AuthenticationFailed("The token was issued before a password change", "token_revoked")
        return super().validate(attrs)
