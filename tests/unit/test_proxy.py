import ipaddress

import pytest
from core import proxy
from core.proxy import forwarded_client, is_trusted_proxy


@pytest.fixture(autouse=True)
def _trusted(settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),  # our proxy speaks for the client
        ("203.0.113.9", "6.6.6.6", "203.0.113.9"),  # anyone else's header is ignored
        ("10.0.0.2", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # only the hop our proxy appended counts
        ("10.0.0.2", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # chained proxies of ours are skipped
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),  # garbage falls back to the peer
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", " , ", "10.0.0.2"),
        ("::1", "2001:db8::1", "2001:db8::1"),
        (None, "6.6.6.6", None),
    ],
)
def test_forwarded_client(peer, forwarded_for, expected):
    assert forwarded_client(peer, forwarded_for) == expected


@pytest.mark.parametrize(
    ("peer", "trusted"), [("10.1.2.3", True), ("11.0.0.1", False), ("/tmp/sock", False), ("", False)]
)
def test_is_trusted_proxy(peer, trusted):
    assert is_trusted_proxy(peer) is trusted


def test_a_changed_setting_is_seen_at_once(settings):
    """The answers are remembered per address, and forgotten when TRUSTED_PROXIES changes."""
    assert is_trusted_proxy("10.1.2.3") is True
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("192.168.0.0/16")]
    assert is_trusted_proxy("10.1.2.3") is False
    assert is_trusted_proxy("192.168.7.7") is True
    assert forwarded_client("192.168.7.7", "203.0.113.9") == "203.0.113.9"


def test_remembered_answers_are_bounded(settings):
    for n in range(proxy.ADDRESSES_REMEMBERED + 100):
        assert is_trusted_proxy(f"11.0.{n // 256}.{n % 256}") is False
    assert proxy._is_trusted.cache_info().currsize <= proxy.ADDRESSES_REMEMBERED
