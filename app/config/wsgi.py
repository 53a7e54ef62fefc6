"""WSGI entry point (Gunicorn's gthread or sync workers). WSGI carries HTTP only: WebSockets need
ASGI."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Django's database receivers of the request signals run only on threads that may hold a
# connection (core/fastpath/wsgi.py): the same housekeeping, without its cost on every request.
# ASGI_FAST_PATH=0 keeps Django's own, as it does under ASGI.
from core.fastpath import wsgi as fast_wsgi  # noqa: E402
from django.conf import settings  # noqa: E402

if settings.ASGI_FAST_PATH:
    fast_wsgi.install()

# Each worker imports this module: its database pool's figures go to the metrics (core/metrics.py).
from core.metrics import start_pool_sampler  # noqa: E402

start_pool_sampler()
