"""Which peer may speak for the client: the one rule for HTTP requests and WebSocket scopes.

The reverse proxy overwrites ``X-Forwarded-For`` with the address it sees and ``X-Forwarded-Proto``
with its scheme. Those headers are believed only when the TCP peer is one of ``TRUSTED_PROXIES``;
otherwise they are dropped, so a client cannot fake its address or https by sending them itself.
"""

import functools
import ipaddress
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

# Answers remembered per address string: every request asks about the same few peers (the proxy's
# addresses), and parsing an address and testing it against each network cost more than the rest of
# the proxy fix together. Bounded, since X-Forwarded-For hops are whatever clients send.
ADDRESSES_REMEMBERED = 1024


def is_trusted_proxy(peer: str | None) -> bool:
    if not peer:
        return False
    return _is_trusted(peer)


@functools.lru_cache(maxsize=ADDRESSES_REMEMBERED)
def _is_trusted(peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # unix socket paths and other non-IP peers
        return False
    return any(address in network for network in settings.TRUSTED_PROXIES)


@receiver(setting_changed)
def _forget_answers(*, setting: str, **kwargs: Any) -> None:
    """TRUSTED_PROXIES changed (tests, override_settings): the remembered answers are stale."""
    if setting == "TRUSTED_PROXIES":
        _is_trusted.cache_clear()


def forwarded_client(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client address to use: the proxy's view of it when the peer is trusted, else the peer.

    With several hops the list is walked from the right, skipping trusted proxies, so only the
    addresses appended by our own proxies are believed.
    """
    if not forwarded_for or not is_trusted_proxy(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop):
            return _valid_ip(hop) or peer
    # Every hop is one of ours (a proxy talking to the app directly): the leftmost is the origin.
    return (_valid_ip(hops[0]) if hops else None) or peer


@functools.lru_cache(maxsize=ADDRESSES_REMEMBERED)
def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
