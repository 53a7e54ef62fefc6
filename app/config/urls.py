from api import views as api
from chat import views as chat
from core import views as core
from django.conf import settings
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path

urlpatterns = [
    path("", chat.index, name="index"),
    path("healthz", core.healthz, name="healthz"),
    path("readyz", core.readyz, name="readyz"),
    path("api/ping", api.ping, name="ping"),
    path("api/ping-sync", api.ping_sync, name="ping-sync"),
    path("api/db", api.db, name="db"),
    path("api/whoami", api.whoami, name="whoami"),
]

if settings.DEBUG:  # in the stack Nginx serves /static/; `make dev` has no Nginx
    urlpatterns += staticfiles_urlpatterns()
