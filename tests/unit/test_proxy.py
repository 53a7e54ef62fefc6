import ipaddress

import pytest
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
