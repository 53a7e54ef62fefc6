import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from loadtests.lib import names
from loadtests.lib.settings import (
    MIN_SEND_INTERVAL,
    capacity_settings,
    chat_settings,
    echo_interval,
    http_weights,
    parse_endpoint_weights,
    room_names,
    ws_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_endpoints_default_to_all_with_equal_weights():
    expected = {"ping": 1, "ping-sync": 1, "db": 1, "static": 1}
    assert (
        parse_endpoint_weights("")
        == parse_endpoint_weights("all")
        == parse_endpoint_weights(None)
        == expected
    )
    assert http_weights(None) == expected


def test_one_endpoint_alone_and_weighted_mixes():
    assert parse_endpoint_weights("db") == {"db": 1}
    assert parse_endpoint_weights(" ping:3, ping-sync ") == {"ping": 3, "ping-sync": 1}
    assert http_weights(Namespace(http_endpoints="static")) == {"static": 1}


@pytest.mark.parametrize("spec", ["pong", "db:0", "db:x", "ping,,db"])
def test_bad_endpoint_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_endpoint_weights(spec)


def test_every_endpoint_row_is_named_by_its_path():
    assert names.HTTP_ENDPOINTS == {
        "ping": "/api/ping",
        "ping-sync": "/api/ping-sync",
        "db": "/api/db",
        "static": "/static/chat/chat.css",
    }


def test_room_names():
    assert room_names("loadtest", 1) == ["loadtest"]
    assert room_names("bench", 3) == ["bench-1", "bench-2", "bench-3"]
    for base, count in (("bad room", 1), ("x" * 100, 2), ("ok", 0)):
        with pytest.raises(ValueError):
            room_names(base, count)


def test_ws_settings_derive_from_the_host_unless_overridden():
    derived = ws_settings("https://localhost:8443", None)
    assert (derived.base, derived.origin, derived.timeout) == (
        "wss://localhost:8443",
        "https://localhost:8443",
        10.0,
    )
    assert (
        ws_settings(None, Namespace(ws_url="", ws_origin="", ws_timeout=10.0)).base == "ws://127.0.0.1:8000"
    )
    explicit = ws_settings(
        "http://localhost:8080",
        Namespace(ws_url="ws://127.0.0.1:8001", ws_origin="http://localhost:8080", ws_timeout=3.0),
    )
    assert (explicit.base, explicit.origin, explicit.timeout) == (
        "ws://127.0.0.1:8001",
        "http://localhost:8080",
        3.0,
    )
    with pytest.raises(ValueError):
        ws_settings(None, Namespace(ws_timeout=0.0))


def test_chat_settings_defaults_and_sender_count():
    defaults = chat_settings(None)
    assert (defaults.rooms, defaults.senders, defaults.interval, defaults.settle) == (
        ["loadtest"],
        1,
        1.0,
        2.0,
    )
    several = chat_settings(
        Namespace(chat_room="r", chat_rooms=4, chat_senders_per_room=2, chat_interval=0.5)
    )
    assert several.rooms == ["r-1", "r-2", "r-3", "r-4"]
    assert several.senders == 8


@pytest.mark.parametrize(
    "options",
    [
        Namespace(chat_senders_per_room=0),
        Namespace(chat_interval=MIN_SEND_INTERVAL / 2),  # would trip the server's rate limit
        Namespace(chat_interval=float("nan")),
        Namespace(chat_ack_timeout=0.0),
        Namespace(chat_settle=-1.0),
        Namespace(chat_settle=float("nan")),
    ],
)
def test_chat_settings_refuse_nonsense(options):
    with pytest.raises(ValueError):
        chat_settings(options)


def test_echo_interval_stays_below_the_rate_limit():
    assert echo_interval(None) == 0.1
    with pytest.raises(ValueError):
        echo_interval(Namespace(echo_interval=0.01))


def test_capacity_settings():
    defaults = capacity_settings(None)
    assert defaults.path == "/ws/echo/"
    assert not defaults.measures_memory
    measured = capacity_settings(Namespace(capacity_memory_pids="12, 34", capacity_memory_cgroups="/a,/b"))
    assert measured.memory_pids == [12, 34]
    assert measured.memory_cgroups == ["/a", "/b"]
    assert measured.measures_memory
    for bad in (Namespace(capacity_memory_pids="x"), Namespace(capacity_path="ws/echo/")):
        with pytest.raises(ValueError):
            capacity_settings(bad)


def test_pure_modules_do_not_import_locust():
    # Locust monkey-patches the interpreter with gevent on import; the pure helpers (and the memory
    # CLI) must stay usable in a normal process, such as this test session.
    code = (
        "import sys\n"
        "import loadtests.lib.settings, loadtests.lib.memory, loadtests.lib.probe, loadtests.lib.backoff\n"
        "assert 'locust' not in sys.modules and 'gevent' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
