"""Custom Locust options shared by every scenario, and the hard time limit.

All options are registered by every locustfile (through ``register()``, which runs once per
process), so ``-f loadtests/locustfiles/`` or the ``SCENARIO`` dispatcher never registers one
twice. Each option can also be set by its environment variable, and appears in the web UI's
"Custom parameters", whose values Locust sends to every worker.

Defaults are typed (``""`` and ``0`` rather than None) because the web UI converts the text it
receives to the type of the current value.
"""

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

logger = logging.getLogger(__name__)

DEFAULT_MAX_RUN_TIME = 3600.0


# (flag, environment variable, default, help); the type is the default's type.
OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--ws-url", "LT_WS_URL", "", "WebSocket base URL; default: derived from --host (http→ws, https→wss)"),
    ("--ws-origin", "LT_WS_ORIGIN", "", "Origin header of WebSocket handshakes; default: --host's origin"),
    ("--ws-timeout", "LT_WS_TIMEOUT", 10.0, "seconds to wait for a handshake or an echo reply"),
    (
        "--max-run-time",
        "LT_MAX_RUN_TIME",
        DEFAULT_MAX_RUN_TIME,
        "hard limit in seconds on any run, even without -t or in the web UI",
    ),
    (
        "--http-endpoints",
        "LT_HTTP_ENDPOINTS",
        "all",
        "http: endpoints and optional weights, e.g. 'db' or 'ping:2,ping-sync:1'; "
        "names: ping, ping-sync, db, static",
    ),
    ("--echo-interval", "LT_ECHO_INTERVAL", 0.1, "echo: seconds between two messages of one user"),
    ("--chat-room", "LT_CHAT_ROOM", "loadtest", "chat: room name (several rooms: NAME-1 … NAME-N)"),
    ("--chat-rooms", "LT_CHAT_ROOMS", 1, "chat: number of rooms; users are spread evenly over them"),
    ("--chat-senders-per-room", "LT_CHAT_SENDERS_PER_ROOM", 1, "chat: sending users per room; others listen"),
    ("--chat-interval", "LT_CHAT_INTERVAL", 1.0, "chat: seconds between two messages of one sender"),
    ("--chat-ack-timeout", "LT_CHAT_ACK_TIMEOUT", 10.0, "chat: seconds before an unacknowledged send fails"),
    (
        "--chat-settle",
        "LT_CHAT_SETTLE",
        2.0,
        "chat: seconds senders wait once every user has started, so that the rooms are full",
    ),
    ("--capacity-path", "LT_CAPACITY_PATH", "/ws/echo/", "capacity: WebSocket path each idle socket opens"),
    (
        "--capacity-ping-interval",
        "LT_CAPACITY_PING_INTERVAL",
        20.0,
        "capacity: seconds between WebSocket pings on each idle socket (proxies close silent ones)",
    ),
    (
        "--capacity-memory-containers",
        "LT_CAPACITY_MEMORY_CONTAINERS",
        "",
        "capacity: regular expression on docker container names to measure",
    ),
    (
        "--capacity-memory-cgroups",
        "LT_CAPACITY_MEMORY_CGROUPS",
        "",
        "capacity: cgroup directories, comma-separated",
    ),
    ("--capacity-memory-pids", "LT_CAPACITY_MEMORY_PIDS", "", "capacity: server process ids (with children)"),
    (
        "--capacity-settle",
        "LT_CAPACITY_SETTLE",
        5.0,
        "capacity: seconds after the last user spawned before memory is measured",
    ),
    ("--capacity-report", "LT_CAPACITY_REPORT", "", "capacity: write the memory report (JSON) to this file"),
    ("--soak-rooms", "LT_SOAK_ROOMS", 20, "soak: rooms open at any time; users join one at random"),
    (
        "--soak-room-lifetime",
        "LT_SOAK_ROOM_LIFETIME",
        60.0,
        "soak: seconds a set of rooms lasts before new ones replace it (rooms come and go)",
    ),
    ("--soak-messages", "LT_SOAK_MESSAGES", 3, "soak: messages each session sends"),
    ("--soak-message-interval", "LT_SOAK_MESSAGE_INTERVAL", 1.0, "soak: seconds between two messages"),
    ("--soak-idle", "LT_SOAK_IDLE", 5.0, "soak: mean seconds a session idles before it leaves"),
    (
        "--soak-leave",
        "LT_SOAK_LEAVE",
        "clean:1,reset:1,mid-message:1",
        "soak: how sessions end, with weights: clean (close handshake), reset (TCP RST), "
        "mid-message (a half-written frame, then FIN)",
    ),
    ("--soak-http-users", "LT_SOAK_HTTP_USERS", 2, "soak: users requesting every HTTP endpoint in turn"),
]


def _add_arguments(parser: Any) -> None:
    for flag, env_var, default, help_text in OPTIONS:
        parser.add_argument(flag, type=type(default), default=default, env_var=env_var, help=help_text)


def max_run_time(environment: Environment) -> float:
    value = getattr(environment.parsed_options, "max_run_time", None) or DEFAULT_MAX_RUN_TIME
    return float(value)


class _TimeLimit:
    """Stops the run after --max-run-time: a forgotten web UI tab or a headless run without -t
    must not keep sending load. Armed on the master (or the only process), where stopping
    reaches every worker."""

    greenlet: gevent.Greenlet | None = None

    @classmethod
    def arm(cls, environment: Environment, **_kwargs: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        cls.disarm()
        cls.greenlet = gevent.spawn_later(max_run_time(environment), cls._stop, environment)

    @classmethod
    def disarm(cls, **_kwargs: Any) -> None:
        if cls.greenlet is not None and cls.greenlet is not gevent.getcurrent():
            cls.greenlet.kill(block=False)
        cls.greenlet = None

    @staticmethod
    def _stop(environment: Environment) -> None:
        runner = environment.runner
        if runner is None:
            return
        logger.warning("--max-run-time of %.0f s reached, stopping the test", max_run_time(environment))
        headless = bool(getattr(environment.parsed_options, "headless", False))
        if headless:
            runner.quit()
        else:
            runner.stop()


@functools.cache
def register() -> None:
    """Add the options and the time limit to Locust; later calls do nothing."""
    events.init_command_line_parser.add_listener(_add_arguments)
    events.test_start.add_listener(_TimeLimit.arm)
    events.test_stop.add_listener(_TimeLimit.disarm)


def validate_at_init(check: Callable[[Environment], object]) -> None:
    """Fail fast on bad options: run ``check`` once options are parsed, exit 2 on ValueError.

    Without this a typo would only surface as every user stopping at start, with a run that
    otherwise "succeeds" with no requests.
    """

    def _listener(environment: Environment, **_kwargs: Any) -> None:
        try:
            check(environment)
        except ValueError as exc:
            logger.error("invalid load-test option: %s", exc)
            sys.exit(2)

    events.init.add_listener(_listener)
