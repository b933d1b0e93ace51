from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
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


@pytest.fixture(autouse=True)
async def _close_thread_connections() -> AsyncIterator[None]:
    """Async ORM calls run in asgiref's database thread; close its connections after each test
    so PostgreSQL lets pytest-django drop the test database at the end."""
    yield
    await sync_to_async(connections.close_all, thread_sensitive=True)()
