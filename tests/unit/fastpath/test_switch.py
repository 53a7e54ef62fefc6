"""ASGI_FAST_PATH picks the handler, and with it whether Django's receivers stay connected."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[3] / "app"
SCRIPT = (
    "import json; import config.asgi as entry; from django.core import signals; "
    "print(json.dumps({'handler': type(entry.django_asgi_app).__name__, "
    "'started': len(sum(signals.request_started._live_receivers(None), []))}))"
)


@pytest.mark.parametrize(
    ("switch", "handler", "receivers"),
    [("1", "FastASGIHandler", 0), ("0", "ASGIHandler", 2), ("", "FastASGIHandler", 0)],
)
def test_switch_picks_the_handler(switch, handler, receivers):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "ASGI_FAST_PATH": switch}
    command = [sys.executable, "-c", SCRIPT]
    result = subprocess.run(command, cwd=APP_DIR, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"handler": handler, "started": receivers}
