from channels.security.websocket import WebsocketDenier
from django.urls import path, re_path

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/", RealtimeConsumer.as_asgi()),
    # Any other path is refused at the handshake instead of failing in the router.
    re_path(r"", WebsocketDenier.as_asgi()),
]
