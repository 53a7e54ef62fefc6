from channels.security.websocket import WebsocketDenier
from django.urls import path, re_path

from chat.consumers import ChatConsumer, EchoConsumer

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
    # Any single path segment reaches the consumer, which refuses bad room names at the handshake.
    re_path(r"^ws/chat/(?P<room>[^/]+)/$", ChatConsumer.as_asgi()),
    # Everything else is refused cleanly (403) instead of raising "No route found".
    re_path(r"", WebsocketDenier.as_asgi()),
]
