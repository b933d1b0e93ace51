"""REST authentication: simplejwt's, refusing access tokens issued before a password change."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.tokens import Token

from accounts.models import User
from accounts.tokens import token_is_current, token_version_of


class JWTAuthentication(authentication.JWTAuthentication):
    # simplejwt annotates the return with a TypeVar no argument binds; this is what it returns.
    def get_user(self, validated_token: Token) -> AbstractBaseUser:  # type: ignore[override]
        user = super().get_user(validated_token)  # also refuses unknown and inactive users
        try:
            version = token_version_of(validated_token.payload)
        except ValueError:
            raise InvalidToken("Token contained no valid token version") from None
        if isinstance(user, User) and not token_is_current(version, user):
            raise AuthenticationFailed("The token was issued before a password change", code="token_revoked")
        return user
