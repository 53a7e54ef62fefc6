"""deploy/bin/gunicorn_asgi_conf.py: the gunicorn-asgi worker's SIGTERM closes WebSockets first, and its
listening socket keeps Gunicorn's backlog."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import uvloop
from core import consumers

from stackctl import free_port
from tests.deploy.helpers import DEPLOY, REPO, VENV_BIN, log_tail, running, wait_for_http

BACKLOG = 2048  # Gunicorn's default --backlog, which gunicorn-asgi.sh keeps


def load_conf() -> ModuleType:
    path = DEPLOY / "bin" / "gunicorn_asgi_conf.py"
    spec = importlib.util.spec_from_file_location("gunicorn_asgi_conf", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_start_file_loads_the_settings_file() -> None:
    start_file = (DEPLOY / "servers" / "gunicorn-asgi.sh").read_text()
    assert '--config "$(dirname "$0")/../bin/gunicorn_asgi_conf.py"' in start_file


def test_sigterm_stops_the_websockets_then_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(consumers, "stop_connections", lambda: events.append("websockets closed") or 3)
    loop = asyncio.new_event_loop()
    worker = SimpleNamespace(
        loop=loop,
        cfg=SimpleNamespace(backlog=BACKLOG),
        log=SimpleNamespace(info=lambda *args: events.append("logged")),
        handle_exit_signal=lambda: events.append("worker stopping"),
    )
    try:
        load_conf().post_worker_init(worker)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop, which runs the hook
        loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.close()
    assert events == ["websockets closed", "logged", "worker stopping"]


def test_other_workers_are_left_alone() -> None:
    load_conf().post_worker_init(SimpleNamespace())  # a sync worker: no loop, nothing to hook


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port`` (``ss``'s Send-Q column for a listener)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[2])


def test_uvloop_and_asyncio_listen_again_with_their_own_backlog() -> None:
    """Why the hook exists: create_server given a listening socket calls listen() with 100."""
    with socket.create_server(("127.0.0.1", 0), backlog=BACKLOG) as sock:
        loop = uvloop.new_event_loop()
        try:
            server = loop.run_until_complete(loop.create_server(asyncio.Protocol, sock=sock))
            assert listen_backlog(sock.getsockname()[1]) == 100
            server.close()
        finally:
            loop.close()


def test_the_worker_keeps_gunicorns_backlog(tmp_path: Path) -> None:
    """The real start file: each worker's server listens with --backlog (2048), not with 100."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "app"),
        "SERVER": "gunicorn-asgi",
        "DJANGO_SECRET_KEY": "test-only-secret-key-for-the-gunicorn-asgi-backlog-test-0123456789",
        "DJANGO_HTTPS": "0",
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "HOME": "/proc/no-home",
        "METRICS": "0",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }
    start_file = DEPLOY / "servers" / "gunicorn-asgi.sh"
    with running([str(start_file)], env, REPO / "app", log) as proc:
        status = wait_for_http(port, "/healthz", proc, time.monotonic() + 60)
        assert status == 200, f"/healthz answered {status}\n{log_tail(log)}"
        assert listen_backlog(port) == BACKLOG, log_tail(log)
