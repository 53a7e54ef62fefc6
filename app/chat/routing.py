from core.asgi_middleware import deny, refusal
from django.urls import path, re_path

from chat.consumers import ChatConsumer, EchoConsumer
from chat.protocol import ROOM_PATTERN

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
    # Only valid room names reach the consumer (which checks again); any other path, a bad room name
    # included, is refused below (403) without touching the channel layer.
    re_path(rf"^ws/chat/(?P<room>{ROOM_PATTERN})/$", ChatConsumer.as_asgi()),
    re_path(r"^ws/chat/", refusal("room_name")),
    re_path(r"", deny),
]
