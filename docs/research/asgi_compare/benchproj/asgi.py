import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from benchproj import consumers  # noqa: E402

websocket_urlpatterns = [
    path("ws/", consumers.EchoConsumer.as_asgi()),
    path("ws/close/", consumers.CloseConsumer.as_asgi()),
    path("ws/flood/", consumers.FloodConsumer.as_asgi()),
    path("ws/slow/", consumers.SlowReaderConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
