"""ASGI entry point: Django for HTTP, bodies bounded first; origin check, JWT auth and the consumer for WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: they touch models and settings.
from channels.routing import ProtocolTypeRouter  # noqa: E402

from accounts.middleware import JwtAuthMiddleware  # noqa: E402
from realtime.conf import realtime_settings  # noqa: E402
from realtime.connection.origin import OriginGuard  # noqa: E402
from realtime.routing import websocket_router  # noqa: E402
from realtime.server.http_limits import BodyLimitMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodyLimitMiddleware(django_asgi_app, realtime_settings().max_request_body_bytes),
        "websocket": OriginGuard(JwtAuthMiddleware(websocket_router)),
    }
)
