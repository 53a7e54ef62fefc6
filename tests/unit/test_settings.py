"""Production settings: what refuses to start, and what Django's deploy check says.

Each case imports the settings in a fresh interpreter, since settings are read once at start-up.
"""

import os
import subprocess
import sys

import pytest

from tests.unit.fresh_process import APP_DIR, json_from_fresh_process

PRODUCTION = {
    "DJANGO_SECRET_KEY": "a-production-secret-key-that-is-long-and-random-enough-0123456789abcdef",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
}


def run_manage(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE"))
    }
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=APP_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_check_passes_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": "*"}, "'*' is refused"),
        ({"DJANGO_ALLOWED_HOSTS": "chat.example.com,*"}, "'*' is refused"),
        ({"DJANGO_CSRF_TRUSTED_ORIGINS": "http://chat.example.com"}, "https://"),
        (
            {"CHANNEL_LAYER_BACKEND": "carrier-pigeon", "REDIS_URL": "redis://127.0.0.1:1"},
            "CHANNEL_LAYER_BACKEND",
        ),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
    ],
)
def test_production_refuses_unsafe_settings(overrides, complaint):
    result = run_manage("check", **{**PRODUCTION, **overrides})
    assert result.returncode != 0
    assert complaint in result.stderr


def test_https_trusted_origins_are_accepted():
    result = run_manage("check", **PRODUCTION, DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.com")
    assert result.returncode == 0, result.stderr


def test_debug_mode_runs_without_a_secret():
    result = run_manage("check", DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_plain_http_stack_fails_the_deploy_check():
    """The TLS switch really switches: without it the deploy check names what is missing."""
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION, DJANGO_HTTPS="0")
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stderr


def test_secret_from_file(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text(PRODUCTION["DJANGO_SECRET_KEY"])
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY_FILE=str(secret),
        DJANGO_ALLOWED_HOSTS="chat.example.com",
    )
    assert result.returncode == 0, result.stderr


def print_in_fresh_process(script: str, drop: tuple[str, ...], **overrides: str):
    """Run ``script`` (which prints JSON) with the production settings and ``overrides``, after
    dropping the variables whose names start with ``drop``; return what it printed."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(drop)}
    environment.update(PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings", **overrides)
    return json_from_fresh_process(script, environment)


def test_production_sends_hsts_for_two_years():
    """Mozilla's TLS configurations: max-age two years (63,072,000 s), subdomains included."""
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS]))"
    )
    assert print_in_fresh_process(script, ("DJANGO_HSTS", "DJANGO_HTTPS")) == [63_072_000, True]


def test_loopback_hosts_stay_allowed_for_probes(settings):
    assert {"localhost", "127.0.0.1", "[::1]"} <= set(settings.ALLOWED_HOSTS)


def test_redis_layer_outlasts_the_blocking_read_and_retries_a_dead_connection():
    """The layer's socket timeout must exceed channels-redis' 5 s BZPOPMIN, or idle sockets drop."""
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        "from channels_redis.core import RedisChannelLayer; "
        "host = settings.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]; "
        "print(json.dumps({'timeout': host['socket_timeout'], 'brpop': RedisChannelLayer.brpop_timeout, "
        "'retry': [e.__name__ for e in host['retry_on_error']]}))"
    )
    layer = print_in_fresh_process(script, ("REDIS",), REDIS_URL="redis://redis.invalid:6379/0")
    assert layer["timeout"] > layer["brpop"]
    assert layer["retry"] == ["ConnectionError"]


@pytest.mark.parametrize(
    ("setting", "checks"),
    [(None, True), ("1", True), ("0", False)],
    ids=["default", "on", "off"],
)
def test_pooled_connections_are_checked_before_use(setting, checks):
    """After a PostgreSQL restart, an idle pooled connection is dead: the pool must test it first."""
    script = (
        "import django, json; django.setup(); from django.db import connection; "
        "from psycopg_pool import ConnectionPool; "
        "print(json.dumps(connection.pool._check is ConnectionPool.check_connection))"
    )
    overrides = {"DATABASE_URL": "postgres://app@postgres.invalid:5432/app"}
    if setting is not None:
        overrides["DATABASE_HEALTH_CHECKS"] = setting
    assert print_in_fresh_process(script, ("DATABASE",), **overrides) is checks


@pytest.mark.parametrize(
    ("services", "database", "layer"),
    [
        ({}, "django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer"),
        (
            {
                "DATABASE_URL": "postgres://app@db.invalid:5432/app",
                "REDIS_URL": "redis://redis.invalid:6379/0",
            },
            "django.db.backends.postgresql",
            "channels_redis.core.RedisChannelLayer",
        ),
    ],
    ids=["nothing-configured", "both-services"],
)
def test_embedded_defaults_and_the_services_that_replace_them(services, database, layer):
    """No service configured: SQLite and the in-memory layer; DATABASE_URL and REDIS_URL switch."""
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND']]))"
    )
    dropped = ("DJANGO_", "DATABASE", "REDIS", "CHANNEL_LAYER")
    assert print_in_fresh_process(script, dropped, **services) == [database, layer]
