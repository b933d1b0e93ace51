"""WebSocket routing: one endpoint, ``/ws/``; any other path is refused at the handshake.

Channels' ``URLRouter`` and ``as_asgi`` would each keep a coroutine frame and a copy of
the scope alive for as long as a connection lasts; with a single exact path neither is
needed, so the router looks the path up and returns the consumer's coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from channels.security.websocket import WebsocketDenier

from realtime.connection.consumer import RealtimeConsumer

WEBSOCKET_PATH = "/ws/"

_deny = WebsocketDenier.as_asgi()


def websocket_router(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
    if scope["path"] == WEBSOCKET_PATH:
        return RealtimeConsumer()(scope, receive, send)
    result: Awaitable[None] = _deny(scope, receive, send)
    return result
