"""OriginGuard: refuses the upgrade (HTTP 403) for browser origins not in REALTIME_ALLOWED_ORIGINS.

Unlike Channels' ``OriginValidator``, a request without ``Origin`` passes: only
browsers send it, and non-browser clients authenticate with their token alone.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from channels.security.websocket import WebsocketDenier

from realtime.conf import realtime_settings


def scope_origin(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


class OriginGuard:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.deny = WebsocketDenier.as_asgi()

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # Synchronous, returning the chosen app's coroutine: no frame kept per connection.
        origin = scope_origin(scope)
        app = self.deny if origin is not None and not realtime_settings().origin_allowed(origin) else self.app
        result: Awaitable[None] = app(scope, receive, send)
        return result
