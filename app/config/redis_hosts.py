"""Where the channel layer's Redis is: REDIS_URL (one Redis, or several to shard over) or
REDIS_SENTINELS (the Redis Sentinel addresses through which the app finds the current primary)."""

from django.core.exceptions import ImproperlyConfigured

SENTINEL_PORT = 26379  # Sentinel's own default port, for an address given without one


def parse_sentinels(raw: str, name: str = "REDIS_SENTINELS") -> list[tuple[str, int]]:
    """``"host[:port],host[:port],..."`` as (host, port) pairs; ImproperlyConfigured names the bad entry.

    Each address must be distinct: one sentinel listed twice would be asked twice, and a failover
    would still depend on it alone when the others are down.
    """
    addresses: list[tuple[str, int]] = []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        if entry.startswith("["):  # an IPv6 address, bracketed: [::1]:26379
            host, _, rest = entry[1:].partition("]")
            colon, port_text = rest[:1], rest[1:]
            valid = rest in ("", ":" + port_text)
        else:
            host, colon, port_text = entry.partition(":")
            valid = ":" not in port_text
        if not valid or not host or any(char.isspace() or char in "/@?#[]" for char in host):
            raise ImproperlyConfigured(f"{name}: {entry!r} is not host or host:port")
        port = SENTINEL_PORT
        if colon:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ImproperlyConfigured(f"{name}: {entry!r} has no valid port (1-65535)")
            port = int(port_text)
        if (host, port) in addresses:
            raise ImproperlyConfigured(f"{name}: {host}:{port} is listed twice")
        addresses.append((host, port))
    if not addresses:
        raise ImproperlyConfigured(f"{name}: no address in {raw!r}; expected host:port,host:port,...")
    return addresses


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def parse_redis_urls(raw: str, name: str = "REDIS_URL") -> list[str]:
    """``"redis://a:6379/0"`` or ``"redis://a:6379/0,redis://b:6379/0"``: the Redis URLs, in order.

    Several URLs shard the layer (channels-redis hashes each channel and group to one of them), so
    the order matters: every process must list them alike, or two processes look for the same group
    on different Redis. Each must be distinct, for the same reason as a sentinel's address.
    """
    urls = [url.strip() for url in raw.split(",") if url.strip()]
    if not urls:
        raise ImproperlyConfigured(f"{name}: no URL in {raw!r}; expected redis://host:6379/0[,redis://...]")
    for url in urls:
        if not url.startswith(REDIS_SCHEMES) or any(char.isspace() for char in url):
            raise ImproperlyConfigured(f"{name}: {url!r} is not a redis://, rediss:// or unix:// URL")
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise ImproperlyConfigured(f"{name}: {repeated[0]} is listed twice")
    return urls
