"""ASGI entry point: HTTP through Django, WebSockets through Channels.

The order is the canonical one: ``get_asgi_application()`` sets Django up before any consumer
(and so any model) is imported.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.ASGI_FAST_PATH:
    # Django's handler without per-request thread hops (core/fastpath); ASGI_FAST_PATH=0 keeps Django's.
    from core.fastpath.handler import FastASGIHandler

    django_asgi_app = FastASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from core.asgi_middleware import (  # noqa: E402
    AllowedHostMiddleware,
    AllowedOriginMiddleware,
    RefusedHandshakeMiddleware,
    WebsocketProxyMiddleware,
)
from core.metrics import start_pool_sampler, watch_event_loop  # noqa: E402

# Each worker imports this module: its database pool's figures go to the metrics (core/metrics.py).
start_pool_sampler()

# Inside: Channels' canonical stack. Around it (core/asgi_middleware.py): the proxy's client address
# and request id, then the Host and Origin refusals made cheaply (no channel layer per refused
# handshake), and outermost the guarantee that a refused handshake is answered at once on every server.
# Around it all, the note of the event loop whose tasks the metrics count (core/metrics.py).
application = watch_event_loop(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": RefusedHandshakeMiddleware(
                WebsocketProxyMiddleware(
                    AllowedHostMiddleware(
                        AllowedOriginMiddleware(
                            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
                        )
                    )
                )
            ),
        }
    )
)
