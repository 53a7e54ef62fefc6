import pytest

from loadtests.lib.urls import (
    DEFAULT_BASE_URL,
    join_url,
    normalize_base_url,
    normalize_ws_url,
    origin_of,
    ws_base_url,
)


def test_default_base_url_is_the_local_dev_server():
    assert normalize_base_url(None) == DEFAULT_BASE_URL == "http://127.0.0.1:8000"
    assert normalize_base_url("  ") == DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000"),
        ("https://localhost", "wss://localhost"),
        ("https://localhost:8443/prefix/", "wss://localhost:8443/prefix"),
        ("http://[::1]:8000", "ws://[::1]:8000"),
        (None, "ws://127.0.0.1:8000"),
    ],
)
def test_ws_url_is_derived_from_the_base_url(base, expected):
    assert ws_base_url(base) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:8000", "ftp://localhost", "http://", "http://localhost/?a=1"])
def test_bad_base_urls_are_refused(bad):
    with pytest.raises(ValueError):
        normalize_base_url(bad)


def test_explicit_ws_url_must_be_ws():
    assert normalize_ws_url("ws://127.0.0.1:8001/") == "ws://127.0.0.1:8001"
    with pytest.raises(ValueError):
        normalize_ws_url("http://127.0.0.1:8001")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/some/prefix", "http://127.0.0.1:8000"),
        ("http://LOCALHOST:80", "http://localhost"),  # default port left out, like browsers
        ("https://localhost:443/", "https://localhost"),
        ("https://localhost:8443", "https://localhost:8443"),
        ("wss://localhost:8443/ws", "https://localhost:8443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        (None, "http://127.0.0.1:8000"),
    ],
)
def test_origin_is_what_a_browser_sends(url, origin):
    assert origin_of(url) == origin


def test_join_url_keeps_a_prefix_and_adds_a_query():
    assert join_url("ws://h:1/prefix", "/ws/echo/") == "ws://h:1/prefix/ws/echo/"
    assert join_url("ws://h:1", "/ws/chat/a/", {"name": "lt x"}) == "ws://h:1/ws/chat/a/?name=lt+x"
