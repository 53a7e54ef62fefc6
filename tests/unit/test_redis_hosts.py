"""REDIS_URL and REDIS_SENTINELS: parsed into the channel layer's hosts; bad input stops the start."""

import pytest
from config.redis_hosts import parse_redis_urls, parse_sentinels
from django.core.exceptions import ImproperlyConfigured

from tests.unit.test_settings import print_in_fresh_process, run_manage


@pytest.mark.parametrize(
    ("raw", "addresses"),
    [
        ("sentinel-1:26379", [("sentinel-1", 26379)]),
        (
            "sentinel-1:26379, sentinel-2:26380 ,sentinel-3",
            [("sentinel-1", 26379), ("sentinel-2", 26380), ("sentinel-3", 26379)],
        ),
        ("10.0.0.5:26379,", [("10.0.0.5", 26379)]),
        ("[::1]:26379,[fd00::2]", [("::1", 26379), ("fd00::2", 26379)]),
    ],
)
def test_addresses_are_parsed_with_sentinels_default_port(raw, addresses):
    assert parse_sentinels(raw) == addresses


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("", "no address"),
        (" , ,", "no address"),
        ("sentinel-1:", "no valid port"),
        ("sentinel-1:http", "no valid port"),
        ("sentinel-1:0", "no valid port"),
        ("sentinel-1:65536", "no valid port"),
        (":26379", "not host or host:port"),
        ("redis://sentinel-1:26379", "not host or host:port"),
        ("::1:26379", "not host or host:port"),
        ("[::1]26379", "not host or host:port"),
        ("sentinel 1:26379", "not host or host:port"),
        ("sentinel-1:26379,sentinel-1", "listed twice"),
    ],
)
def test_bad_addresses_are_refused_naming_the_entry(raw, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint) as refused:
        parse_sentinels(raw)
    assert "REDIS_SENTINELS" in str(refused.value)


LAYER_HOST = (
    "import django, json; django.setup(); from django.conf import settings; "
    "layer = settings.CHANNEL_LAYERS['default']; host = layer['CONFIG']['hosts'][0]; "
    "host.pop('retry_on_error'); print(json.dumps({'backend': layer['BACKEND'], **host}))"
)


@pytest.mark.parametrize("backend", ["core", "pubsub"])
def test_sentinels_configure_the_layer_through_the_named_master(backend):
    host = print_in_fresh_process(
        LAYER_HOST,
        ("REDIS", "CHANNEL_LAYER"),
        REDIS_SENTINELS="sentinel-1:26379,sentinel-2:26379,sentinel-3:26379",
        REDIS_SENTINEL_MASTER="chat",
        CHANNEL_LAYER_BACKEND=backend,
    )
    assert host["backend"].startswith(f"channels_redis.{backend}.")
    assert "address" not in host
    assert host["master_name"] == "chat"
    assert host["sentinels"] == [["sentinel-1", 26379], ["sentinel-2", 26379], ["sentinel-3", 26379]]
    # A read on a killed primary gets no answer at all: it must fail soon after channels-redis'
    # 5 s blocking read, not 15 s later, for sockets to reconnect within seconds of a failover.
    assert 5 < host["socket_timeout"] < 10
    assert host["sentinel_kwargs"]["socket_connect_timeout"] <= 1


def test_the_master_name_defaults_to_sentinels_own_example():
    host = print_in_fresh_process(LAYER_HOST, ("REDIS", "CHANNEL_LAYER"), REDIS_SENTINELS="sentinel-1")
    assert host["master_name"] == "mymaster"


def test_the_layer_connects_through_the_sentinels():
    """The host entry is one channels-redis turns into redis-py's Sentinel pool (no connection yet)."""
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        "from channels_redis.utils import create_pool; "
        "pool = create_pool(settings.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]); "
        "print(json.dumps([type(pool).__name__, pool.service_name, "
        "[c.connection_pool.connection_kwargs['host'] for c in pool.sentinel_manager.sentinels]]))"
    )
    found = print_in_fresh_process(script, ("REDIS", "CHANNEL_LAYER"), REDIS_SENTINELS="a:1,b:2")
    assert found == ["SentinelConnectionPool", "mymaster", ["a", "b"]]


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        # REDIS_URL emptied: the suite's own (make test-services sets one) would be the first complaint.
        (
            {"REDIS_SENTINELS": "sentinel-1:x", "REDIS_URL": ""},
            "REDIS_SENTINELS: 'sentinel-1:x' has no valid port",
        ),
        (
            {"REDIS_SENTINELS": "sentinel-1", "REDIS_URL": "redis://redis:6379/0"},
            "REDIS_URL (one Redis) or REDIS_SENTINELS (Redis with Sentinel), not both",
        ),
    ],
)
def test_the_app_refuses_to_start_on_bad_sentinel_settings(overrides, complaint):
    result = run_manage(
        "check",
        DJANGO_SECRET_KEY="a-production-secret-key-that-is-long-and-random-enough-0123456789abcdef",
        **overrides,
    )
    assert result.returncode != 0
    assert complaint in result.stderr


# --- REDIS_URL: one Redis, or several to shard over ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "urls"),
    [
        ("redis://redis:6379/0", ["redis://redis:6379/0"]),
        ("redis://a:6379/0, rediss://b:6380/1 ,", ["redis://a:6379/0", "rediss://b:6380/1"]),
        ("unix:///run/redis.sock", ["unix:///run/redis.sock"]),
    ],
)
def test_redis_urls_are_kept_in_their_order(raw, urls):
    assert parse_redis_urls(raw) == urls


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (" , ", "no URL"),
        ("redis:6379", "is not a redis://"),
        ("http://redis:6379/0", "is not a redis://"),
        ("redis://a:6379/0,redis://a:6379/0", "listed twice"),
    ],
)
def test_bad_redis_urls_are_refused_naming_the_entry(raw, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint) as refused:
        parse_redis_urls(raw)
    assert "REDIS_URL" in str(refused.value)


LAYER_HOSTS = (
    "import django, json; django.setup(); from django.conf import settings; "
    "hosts = settings.CHANNEL_LAYERS['default']['CONFIG']['hosts']; "
    "print(json.dumps([{k: v for k, v in host.items() if k != 'retry_on_error'} for host in hosts]))"
)


def test_several_redis_urls_shard_the_layer_with_the_same_options():
    hosts = print_in_fresh_process(
        LAYER_HOSTS, ("REDIS", "CHANNEL_LAYER"), REDIS_URL="redis://a:6379/0,redis://b:6379/0"
    )
    assert [host.pop("address") for host in hosts] == ["redis://a:6379/0", "redis://b:6379/0"]
    assert hosts[0] == hosts[1]  # timeouts, pool size: every shard alike


def test_the_app_refuses_to_start_on_a_bad_redis_url():
    result = run_manage(
        "check",
        DJANGO_SECRET_KEY="a-production-secret-key-that-is-long-and-random-enough-0123456789abcdef",
        REDIS_URL="redis://a:6379/0,redis-b:6379",
    )
    assert result.returncode != 0
    assert "REDIS_URL: 'redis-b:6379' is not a redis://" in result.stderr
