"""Scenario ``capacity``: how many idle WebSockets the server holds, and what each one costs.

Every user opens one socket to ``--capacity-path`` (default ``/ws/echo/``; a chat room path such
as ``/ws/chat/capacity/`` adds the room membership's cost) and keeps it open, idle, until the run
ends. ``-u N -r R`` ramps to N sockets at R handshakes/s; ``-t`` (and ``--max-run-time``) bound the
run, and a user never holds more than one socket, so the socket count never exceeds N.

Rows: ``connect <path>`` (handshake times, refusals as failures) and ``disconnect <path>`` (sockets
the server dropped; the user reconnects with backoff).

With ``--capacity-memory-containers`` (docker), ``--capacity-memory-cgroups`` or
``--capacity-memory-pids``, the master measures the app's memory when the test starts (before any
socket) and again ``--capacity-settle`` seconds after the last user spawned, then logs the memory
per open connection and writes it to ``--capacity-report`` (JSON).
"""

import contextlib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import gevent
from locust import events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.lib import memory, names, options
from loadtests.lib.probe import UnexpectedFrameError, parse_frame, server_error
from loadtests.lib.settings import CapacitySettings, capacity_settings, ws_settings
from loadtests.lib.wsuser import SOCKET_ERRORS, WebSocketUser

logger = logging.getLogger(__name__)

options.register()
options.validate_at_init(
    lambda environment: (
        capacity_settings(environment.parsed_options),
        ws_settings(environment.host, environment.parsed_options),
    )
)


class IdleSocketUser(WebSocketUser):
    path_label = names.ECHO_PATH

    def on_start(self) -> None:
        super().on_start()
        self.capacity = capacity_settings(self.environment.parsed_options)
        self.path_label = self.capacity.path
        self.start_receiver()  # connects, then only listens for a close

    def wait_time(self) -> float:
        return self.capacity.ping_interval

    @task
    def keep_alive(self) -> None:
        # Idle, but not silent: proxies close WebSockets that carry nothing for a while (Nginx's
        # proxy_read_timeout is 60 s by default), and that would measure the proxy, not the app.
        self.start_receiver()
        ws = self.ws
        if ws is not None:
            # A failed ping needs no report here: the receiver greenlet sees the broken socket,
            # reports it and reconnects.
            with contextlib.suppress(*SOCKET_ERRORS):
                ws.ping()

    def on_text(self, text: str) -> None:
        # Idle sockets expect nothing but a chat path's history frame; errors still count.
        try:
            error = server_error(parse_frame(text))
        except UnexpectedFrameError as exc:
            error = exc
        if error is not None:
            self.fire(names.ws_error(self.path_label), 0, len(text), exception=error)


def open_sockets(environment: Environment, path_label: str) -> int:
    """Sockets open now, from the stats: handshakes that succeeded minus server-side drops.

    On the master the stats are the workers' (reported every few seconds), which is why memory is
    measured --capacity-settle seconds after spawning completes.
    """
    entries = environment.stats.entries
    connect = entries.get((names.ws_connect(path_label), names.WS))
    disconnect = entries.get((names.ws_disconnect(path_label), names.WS))
    opened = connect.num_requests - connect.num_failures if connect else 0
    return opened - (disconnect.num_requests if disconnect else 0)


class MemoryReport:
    """Memory before the first socket and once all sockets are open (master or single process)."""

    environment: ClassVar[Environment | None] = None
    settings: ClassVar[CapacitySettings | None] = None
    baseline: ClassVar[memory.Snapshot | None] = None
    pending: ClassVar[gevent.Greenlet | None] = None

    @classmethod
    def on_test_start(cls, environment: Environment, **_kwargs: Any) -> None:
        cls.environment = environment
        cls.baseline = None
        if isinstance(environment.runner, WorkerRunner):
            return
        cls.settings = capacity_settings(environment.parsed_options)
        if cls.settings.measures_memory:
            cls.baseline = cls._snapshot("before the first socket")

    @classmethod
    def on_spawning_complete(cls, user_count: int, **_kwargs: Any) -> None:
        if cls.baseline is None or cls.settings is None:
            return  # a worker, or nothing to measure
        if cls.pending is not None:
            cls.pending.kill(block=False)  # the web UI changed the user count: measure the new level
        cls.pending = gevent.spawn_later(cls.settings.settle, cls.measure, user_count)

    @classmethod
    def on_test_stop(cls, **_kwargs: Any) -> None:
        if cls.pending is not None and cls.pending is not gevent.getcurrent():
            cls.pending.kill(block=False)
        cls.pending = None

    @classmethod
    def measure(cls, user_count: int) -> None:
        if cls.environment is None or cls.settings is None or cls.baseline is None:
            return
        after = cls._snapshot("with the sockets open")
        if after is None:
            return
        connections = open_sockets(cls.environment, cls.settings.path)
        report: dict[str, Any] = {"path": cls.settings.path, "users": user_count}
        report.update(memory.per_connection(cls.baseline, after, connections))
        logger.info(
            "capacity memory: %d open sockets, %+.1f MiB, %s bytes per connection",
            connections,
            report["delta_bytes"] / 2**20,
            report["bytes_per_connection"],
        )
        if cls.settings.report:
            Path(cls.settings.report).write_text(json.dumps(report, indent=2) + "\n")

    @classmethod
    def _snapshot(cls, when: str) -> memory.Snapshot | None:
        settings = cls.settings
        assert settings is not None
        try:
            return memory.take_snapshot(
                settings.memory_containers, settings.memory_cgroups, settings.memory_pids
            )
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            # Measuring is an extra: the connection test itself goes on without it.
            logger.error("could not measure memory %s: %s", when, exc)
            return None


events.test_start.add_listener(MemoryReport.on_test_start)
events.spawning_complete.add_listener(MemoryReport.on_spawning_complete)
events.test_stop.add_listener(MemoryReport.on_test_stop)
