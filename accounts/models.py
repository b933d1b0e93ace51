"""The project's user, with the version its tokens carry (accounts/tokens.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import hashers
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """Custom from day one so fields can be added without a migration dance."""

    token_version = models.PositiveIntegerField(
        default=0,
        help_text="Tokens carry the version they were issued at; a password change bumps it, "
        "which revokes every access and refresh token issued before.",
    )

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        if self.pk is not None:  # a change, not the first password of a new account
            self.token_version += 1

    def set_unusable_password(self) -> None:
        super().set_unusable_password()
        if self.pk is not None:
            self.token_version += 1

    def check_password(self, raw_password: str | None) -> bool:
        # Django re-hashes a correct password when its hasher's parameters changed (every
        # release raises PBKDF2's iterations) through set_password; that is not a password
        # change and must not revoke the tokens about to be issued.
        def rehash(raw: str) -> None:
            self.password = make_password(raw)
            self.save(update_fields=["password"])

        return hashers.check_password(raw_password, self.password, rehash)

    async def acheck_password(self, raw_password: str | None) -> bool:
        async def rehash(raw: str) -> None:
            self.password = make_password(raw)
            await self.asave(update_fields=["password"])

        return await hashers.acheck_password(raw_password, self.password, rehash)

    def save(self, *args: Any, update_fields: Iterable[str] | None = None, **kwargs: Any) -> None:
        # `user.set_password(p); user.save(update_fields=["password"])` must keep the bump.
        if update_fields is not None and "password" in update_fields:
            update_fields = {*update_fields, "token_version"}
        super().save(*args, update_fields=update_fields, **kwargs)
