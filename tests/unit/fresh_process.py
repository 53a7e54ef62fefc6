"""Run a snippet in a fresh interpreter inside app/: settings are read once per process."""

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[2] / "app"


def json_from_fresh_process(script: str, environment: Mapping[str, str]) -> Any:
    """Run ``script`` (which prints JSON) with ``environment``; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APP_DIR,
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def request_signal_receivers(setup: str) -> dict[str, list[str]]:
    """The receivers of Django's request_started and request_finished, by qualified name, in a
    fresh process with the production settings after ``setup`` (Python statements) ran."""
    script = (
        f"import json; {setup}; from django.core import signals; "
        "name = lambda r: f'{r.__module__}.{r.__qualname__}'; "
        "print(json.dumps({s: [name(r) for r in sum(getattr(signals, s)._live_receivers(None), [])] "
        "for s in ('request_started', 'request_finished')}))"
    )
    return json_from_fresh_process(script, {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"})
