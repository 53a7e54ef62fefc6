"""Run a snippet in a fresh interpreter inside app/: settings are read once per process."""

import json
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
