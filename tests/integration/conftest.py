from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from project.asgi import application


@pytest.fixture
def alice(transactional_db: None) -> User:
    return User.objects.create_user(username="alice", password="pw-alice-123456")


@pytest.fixture
def communicator() -> Callable[..., WebsocketCommunicator]:
    def make(user: User | None = None, *, token: str | None = None, headers: list[Any] | None = None) -> Any:
        if user is not None and token is None:
            token = str(AccessToken.for_user(user))
        path = "/ws/" if token is None else f"/ws/?token={token}"
        return WebsocketCommunicator(application, path, headers=headers or [])

    return make
