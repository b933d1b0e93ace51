from __future__ import annotations

from accounts.models import User


async def user_get_by_id(user_id: int) -> User | None:
    return await User.objects.filter(pk=user_id).afirst()


async def user_get_by_username(username: str) -> User | None:
    return await User.objects.filter(username=username).afirst()
