"""ASGI entry point: Django for HTTP, bodies bounded first; origin check, JWT auth and the consumer for WebSocket
(built by ``realtime.asgi.realtime_application``, the one call an embedding project makes too)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from realtime.asgi import realtime_application  # noqa: E402

application = realtime_application(django_asgi_app)
