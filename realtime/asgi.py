"""The one ASGI routing call a project makes (issue 16): ``application = realtime_application()``.

It returns the service's protocol router: HTTP goes to Django (request bodies bounded by
``REALTIME_MAX_REQUEST_BODY_BYTES`` first), WebSocket connections to ``/ws/`` pass the origin
check (``REALTIME_ALLOWED_ORIGINS``) and the JWT handshake before they reach the consumer::

    # mysite/asgi.py
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from realtime.asgi import realtime_application

    application = realtime_application()

Importing this module does not set Django up; :func:`realtime_application` does (through
``get_asgi_application``) before it imports the middleware, which touch models and settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ASGIApp", "realtime_application"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def realtime_application(django_http_app: ASGIApp | None = None) -> ASGIApp:
    """The project's ASGI application: ``django_http_app`` (default: Django's own, from
    ``get_asgi_application()``) for HTTP, the realtime endpoint ``/ws/`` for WebSocket."""
    if django_http_app is None:
        from django.core.asgi import get_asgi_application

        django_http_app = get_asgi_application()

    # Imported once Django is set up: they touch models and settings.
    from channels.routing import ProtocolTypeRouter

    from accounts.middleware import JwtAuthMiddleware
    from realtime.conf import realtime_settings
    from realtime.connection.origin import OriginGuard
    from realtime.routing import websocket_router
    from realtime.server.http_limits import BodyLimitMiddleware

    application: ASGIApp = ProtocolTypeRouter(
        {
            "http": BodyLimitMiddleware(django_http_app, realtime_settings().max_request_body_bytes),
            "websocket": OriginGuard(JwtAuthMiddleware(websocket_router)),
        }
    )
    return application
