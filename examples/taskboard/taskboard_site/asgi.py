"""The one ASGI routing call: Django for HTTP, the realtime endpoint ``/ws/`` for WebSocket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskboard_site.settings")

from realtime.asgi import realtime_application

application = realtime_application()
