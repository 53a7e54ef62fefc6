"""The one settings module: every knob comes from the environment, defaults are safe for production.

``.env.example`` at the repository root documents each variable. Development conveniences are
switched on by ``DJANGO_DEBUG=1``, not by a second settings file.
"""

import ipaddress
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError

from config import env
from config.redis_hosts import parse_redis_urls, parse_sentinels

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core -----------------------------------------------------------------------------------------

DEBUG = env.get_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.get_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set; "
            'generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG=1"  # noqa: S105

# Loopback names are always allowed: the container HEALTHCHECK and orchestrator probes call the
# app from inside the container or pod, and a Host of localhost cannot be abused from outside.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env.get_list("DJANGO_ALLOWED_HOSTS", ",".join(LOOPBACK_HOSTS))
if "*" in ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list host names; '*' is refused in production")
ALLOWED_HOSTS += [host for host in LOOPBACK_HOSTS if host not in ALLOWED_HOSTS]

CSRF_TRUSTED_ORIGINS = env.get_list("DJANGO_CSRF_TRUSTED_ORIGINS")
if not DEBUG and any(not origin.startswith("https://") for origin in CSRF_TRUSTED_ORIGINS):
    raise ImproperlyConfigured("DJANGO_CSRF_TRUSTED_ORIGINS entries must start with https:// in production")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "core",
    "api",
    "chat",
]

# Every middleware here runs on both the sync (WSGI) and async (ASGI) paths. Order matters: the
# metrics time the whole chain, so they come first; Content-Length is measured last, on the finished
# response, so it comes next; then the proxy fix,
# so that everything after it sees the real client address and scheme.
# With the fast path, the ASGI handler builds Django's three classes below from their inline
# variants (core/fastpath/middleware.py); the names stay Django's, which the deploy checks look for.
MIDDLEWARE = [
    "core.middleware.metrics_middleware",
    "core.middleware.content_length_middleware",
    "core.middleware.trusted_proxy_middleware",
    "core.middleware.request_id_middleware",
    "core.middleware.allowed_host_middleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Database: SQLite when nothing is configured, PostgreSQL through Django's pool otherwise -------

DATABASE_URL = env.get_str("DATABASE_URL")
if DATABASE_URL:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
    # The password may come apart from the URL (DATABASE_PASSWORD or DATABASE_PASSWORD_FILE), so
    # the URL itself holds no secret.
    _database["PASSWORD"] = env.get_str("DATABASE_PASSWORD", _database.get("PASSWORD") or "")
    if _database["ENGINE"] == "django.db.backends.postgresql":
        # Django's own pool (psycopg_pool): a bounded number of connections per process, returned at
        # the end of every request. It requires CONN_MAX_AGE = 0.
        # With health checks the pool tests a connection (an empty query) before lending it: after
        # a PostgreSQL restart, the connections a process kept idle are dead, and without the check
        # the first request each of them serves fails.
        _database["CONN_HEALTH_CHECKS"] = env.get_bool("DATABASE_HEALTH_CHECKS", default=True)
        _database["OPTIONS"] = {
            "pool": {
                "min_size": env.get_int("DATABASE_POOL_MIN_SIZE", 1),
                "max_size": env.get_int("DATABASE_POOL_MAX_SIZE", 8),
                "timeout": env.get_float("DATABASE_POOL_TIMEOUT", 5.0),
                # How long the pool keeps retrying a failed connection, with a backoff that doubles
                # (1, 2, 4 ... s), before it gives up and the next request connects afresh.
                # psycopg_pool's default, 300 s, lets the backoff grow past 10 s while PostgreSQL
                # restarts, and requests wait that long after it is back.
                "reconnect_timeout": env.get_float("DATABASE_POOL_RECONNECT_TIMEOUT", 5.0),
            },
            "connect_timeout": env.get_int("DATABASE_CONNECT_TIMEOUT", 3),
            "application_name": env.get_str("SERVER", "django"),
        }
else:
    _database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": env.get_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 10},
    }
DATABASES = {"default": _database}

# --- Channel layer: in-memory when nothing is configured, Redis across processes otherwise --------

# One Redis (redis://host:6379/0), or several separated by commas: the layer then shards its
# channels and groups over them (README "Sharding the channel layer").
REDIS_URL = env.get_str("REDIS_URL")
# Redis with Sentinel (high availability): the sentinels' addresses, instead of REDIS_URL. The
# layer asks them for the current primary of REDIS_SENTINEL_MASTER, and again after a failover.
REDIS_SENTINELS = env.get_str("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = env.get_str("REDIS_SENTINEL_MASTER", "mymaster")
if REDIS_URL and REDIS_SENTINELS:
    raise ImproperlyConfigured("set REDIS_URL (one Redis) or REDIS_SENTINELS (Redis with Sentinel), not both")
CHANNEL_LAYER_BACKEND = env.get_str("CHANNEL_LAYER_BACKEND", "core")
_LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
# Seconds a room membership lasts unless renewed (core and in-memory layers; channels-redis' own
# default is a day). Live members renew theirs every third of it (chat/rooms.py), so only the
# members of a process that died without leaving (SIGKILL, out of memory, a server that never calls
# disconnect()) age out, within this time. Pub/sub memberships end with their Redis connection.
CHANNEL_LAYER_GROUP_EXPIRY = env.get_int("CHANNEL_LAYER_GROUP_EXPIRY", 120)
# Messages queued per channel (core layer), and broadcasts a socket may fall behind its room before
# it is closed (chat/rooms.py, every layer).
CHANNEL_LAYER_CAPACITY = env.get_int("CHANNEL_LAYER_CAPACITY", 1000)
if REDIS_URL or REDIS_SENTINELS:
    if CHANNEL_LAYER_BACKEND not in _LAYER_BACKENDS:
        raise ImproperlyConfigured(f"CHANNEL_LAYER_BACKEND must be one of {sorted(_LAYER_BACKENDS)}")
    _redis_host: dict[str, object] = {
        # redis-py times a socket out after 5 s by default, exactly as long as channels-redis blocks
        # in BZPOPMIN waiting for a message: an idle consumer's receive would fail. Stay above it.
        # A killed primary answers nothing, not even a reset: a read waiting on it fails only at
        # this timeout. With Sentinel it is shorter, so that the rooms of every process notice the
        # failover (and their sockets reconnect, to the new primary) within seconds of it.
        "socket_timeout": env.get_float("REDIS_SOCKET_TIMEOUT", 8.0 if REDIS_SENTINELS else 15.0),
        "socket_connect_timeout": env.get_float("REDIS_CONNECT_TIMEOUT", 3.0),
        # After a Redis restart the pool still holds connections to the old server: a command that
        # fails on one is retried once on a fresh connection instead of failing the client.
        "retry_on_error": [RedisConnectionError],
        "health_check_interval": 30,
        # Connections per process. RedisChannelLayer takes one per concurrent call (a burst of
        # joins takes hundreds); past the limit a call fails with "Too many connections".
        "max_connections": env.get_int("REDIS_MAX_CONNECTIONS", 1000),
    }
    if REDIS_SENTINELS:
        _sentinel_timeout = env.get_float("REDIS_SENTINEL_TIMEOUT", 1.0)
        _redis_host |= {
            "master_name": REDIS_SENTINEL_MASTER,
            "sentinels": parse_sentinels(REDIS_SENTINELS),
            # For the questions to the sentinels, which answer at once: a sentinel that is down
            # costs this long before the next one is asked.
            "sentinel_kwargs": {
                "socket_timeout": _sentinel_timeout,
                "socket_connect_timeout": _sentinel_timeout,
            },
        }
    # Sentinel: one host entry. REDIS_URL: one entry per Redis, alike but for the address.
    _redis_hosts = [_redis_host]
    if REDIS_URL:
        _redis_hosts = [_redis_host | {"address": url} for url in parse_redis_urls(REDIS_URL)]
    _layer_config: dict[str, object] = {"hosts": _redis_hosts}
    if CHANNEL_LAYER_BACKEND == "core":
        _layer_config["capacity"] = CHANNEL_LAYER_CAPACITY
        _layer_config["expiry"] = env.get_int("CHANNEL_LAYER_EXPIRY", 60)
        _layer_config["group_expiry"] = CHANNEL_LAYER_GROUP_EXPIRY
    CHANNEL_LAYERS = {"default": {"BACKEND": _LAYER_BACKENDS[CHANNEL_LAYER_BACKEND], "CONFIG": _layer_config}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": CHANNEL_LAYER_GROUP_EXPIRY},
        }
    }

# --- Proxy, HTTPS and security headers ------------------------------------------------------------

# Peers allowed to set X-Forwarded-For / X-Forwarded-Proto (the reverse proxy). From any other peer
# those headers are dropped, so a client talking to the app directly cannot fake its IP or https.
TRUSTED_PROXIES = [
    ipaddress.ip_network(cidr, strict=False)
    for cidr in env.get_list("TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The TLS switch: on by default (production). The local plain-HTTP stack turns it off.
HTTPS = env.get_bool("DJANGO_HTTPS", default=True)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP inside the network
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
# Two years, as in Mozilla's TLS configurations; the header is Django's alone (Nginx sends none).
SECURE_HSTS_SECONDS = env.get_int("DJANGO_HSTS_SECONDS", 63_072_000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a commitment made per domain with the browsers' preload list, so it stays opt-in;
# the deploy check's reminder about it (security.W021) is silenced for that reason.
SECURE_HSTS_PRELOAD = env.get_bool("DJANGO_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# Same limit as Nginx's client_max_body_size, so a body that gets past the proxy is still bounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.get_int("REQUEST_BODY_MAX_BYTES", 1_048_576)

# --- Static files: collected at image build time, served by Nginx --------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = env.get_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STORAGES = {
    "staticfiles": {
        "BACKEND": env.get_str(
            "DJANGO_STATICFILES_STORAGE", "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
        )
    }
}

# --- The application's own knobs -------------------------------------------------------------------

# The ASGI fast path (core/fastpath): Django's request path without per-request thread hops.
# 0 runs Django's stock ASGIHandler and middleware, for comparison (make bench runs both).
ASGI_FAST_PATH = env.get_bool("ASGI_FAST_PATH", default=True)

SERVER_VARIANT = env.get_str("SERVER", "unknown")  # which server runs this process (/api/whoami)
READINESS_TIMEOUT = env.get_float("READINESS_TIMEOUT", 2.0)  # seconds per dependency in /readyz
CHAT_HISTORY_SIZE = env.get_int("CHAT_HISTORY_SIZE", 50)
CHAT_MESSAGE_MAX_CHARS = env.get_int("CHAT_MESSAGE_MAX_CHARS", 2000)
# Per-connection token bucket for incoming frames, and how many refused frames close the socket.
WS_RATE_PER_SECOND = env.get_float("WS_RATE_PER_SECOND", 20.0)
WS_RATE_BURST = env.get_int("WS_RATE_BURST", 40)
WS_RATE_STRIKES = env.get_int("WS_RATE_STRIKES", 20)
# The largest WebSocket message, in bytes. Every server is started with this limit and closes a
# bigger message with 1009; the consumers enforce it too, for servers that have no such setting.
WS_MAX_MESSAGE_BYTES = env.get_int("WS_MAX_MESSAGE_BYTES", 65_536)
# Seconds between application-level heartbeat frames ({"type": "heartbeat"}); 0 = off. Only the
# start files of servers that cannot send WebSocket pings themselves turn it on, so that an idle
# socket still carries traffic more often than the proxy's read timeout.
WS_APP_HEARTBEAT = env.get_float("WS_APP_HEARTBEAT", 0.0)
# Seconds the client must have sent nothing before the app's close goes out; 0 = off. Only the start
# files of servers that end the connection at the app's close without the closing handshake turn it
# on: a socket closed with the client's frames unread is reset, and the reset loses the close frame.
WS_QUIET_BEFORE_CLOSE = env.get_float("WS_QUIET_BEFORE_CLOSE", 0.0)
# Layer or database calls made by a consumer give up after this many seconds (no hang).
WS_DEPENDENCY_TIMEOUT = env.get_float("WS_DEPENDENCY_TIMEOUT", 5.0)

# --- Logging: one line per event on stdout, JSON by default -----------------------------------------

LOG_LEVEL = env.get_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env.get_str("LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["request_id"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Django logs every 4xx/5xx on django.request; keep them, they carry the request id.
        "django": {"level": LOG_LEVEL, "propagate": True},
    },
}
