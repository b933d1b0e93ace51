"""ASGI entry point: Django for HTTP; origin check, JWT auth and the realtime consumer for WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: they touch models and settings.
from channels.routing import ProtocolTypeRouter  # noqa: E402

from accounts.middleware import JwtAuthMiddleware  # noqa: E402
from realtime.origin import OriginGuard  # noqa: E402
from realtime.routing import websocket_router  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginGuard(JwtAuthMiddleware(websocket_router)),
    }
)
