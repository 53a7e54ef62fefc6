"""REDIS_SENTINELS: the Redis Sentinel addresses through which the app finds the current primary."""

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
