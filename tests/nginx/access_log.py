"""Nginx's JSON access log as the stack writes it, for the tests that read it from ``docker logs``.

Nginx buffers the log (``access_log ... buffer=... flush=...`` in nginx/nginx.conf.template): a
line reaches the container's output up to ``FLUSH_SECONDS`` after its request. Each worker has a
buffer of its own, so after that long every line of every worker is out.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "nginx.conf.template"


_ACCESS_LOG_FLUSH = re.compile(r"^\s*access_log\s+\S+\s+json\b[^;]*\bflush=(\d+)s\b", re.MULTILINE)


def _flush_seconds(template: Path = TEMPLATE) -> float:
    match = _ACCESS_LOG_FLUSH.search(template.read_text())
    return float(match.group(1)) if match else 0.0


FLUSH_SECONDS = _flush_seconds()


def entries(output: str) -> list[dict[str, Any]]:
    """The access-log lines of Nginx's output (its other lines are skipped)."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def wait_until_flushed() -> None:
    """Wait until every request made so far is in the log."""
    time.sleep(FLUSH_SECONDS + 0.5)
