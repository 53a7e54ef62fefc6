"""deploy/bin/gunicorn_asgi_conf.py: the gunicorn-asgi worker's SIGTERM closes WebSockets first."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
from types import ModuleType, SimpleNamespace

import pytest
from core import consumers

from tests.deploy.helpers import DEPLOY


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
