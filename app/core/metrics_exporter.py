"""The container's /metrics: one small HTTP server beside the app server, on METRICS_PORT.

    python -m core.metrics_exporter --bind 0.0.0.0 --port 9100

Started once per container by the start files (deploy/servers/common.sh) just before they ``exec``
the server, so its parent is the server's master process (or the prefork supervisor, or the single
server process), and every variant is covered the same way, whatever its process model: the
workers count into the files of ``PROMETHEUS_MULTIPROC_DIR`` (core/metrics.py) and this process
adds them up at each scrape. One exporter instead of an endpoint in each server: a worker cannot
answer for its siblings, the servers share no hook to add a route outside the app, and a route in
the app would sit on the public port behind Nginx.

At each scrape it also:

- forgets the live gauges of processes that are gone (``mark_process_dead``): a worker a supervisor
  restarted (Gunicorn's arbiter, Uvicorn's and Granian's supervisors, prefork.py) would otherwise
  still count its open connections. One sweep here covers every supervisor, where only Gunicorn
  has a hook (``child_exit``) to do it; counters and histograms of dead processes are kept, so the
  totals never go down;
- reports the server's processes (its master and every descendant, this exporter excluded) in the
  client's standard ``process_*`` names, summed, since the client's own process collector sees
  only the process it runs in. CPU time includes the workers that have exited (their parent's
  ``cutime``), so ``process_cpu_seconds_total`` only grows while the container lives;
- names the variant once: ``realtime_django_server_info{server="uvicorn"} 1``.

It exits when its parent does (the container is stopping anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

PROC = Path("/proc")
LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")
PARENT_POLL_SECONDS = 1.0


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sweep_dead_processes(path: str) -> list[int]:
    """``mark_process_dead`` for every process with live gauges that no longer runs; returns them."""
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = LIVE_GAUGE_FILE.search(name)
        if match and not is_running(int(match[1])):
            dead.add(int(match[1]))
    for pid in dead:
        mark_process_dead(pid, path)
    return sorted(dead)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3 onwards), or None if it is gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_tree(root: int, exclude: int) -> list[int]:
    """``root`` and all its descendants that run now, but ``exclude`` (this exporter)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid != exclude:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree


class ServerCollector(Collector):
    """What a scrape of the container returns (see the module's docstring)."""

    def __init__(self, path: str, server: str, root: int, exclude: int | None = None) -> None:
        self.path = path
        self.server = server
        self.root = root
        self.exclude = os.getpid() if exclude is None else exclude  # this exporter
        self.multiprocess = MultiProcessCollector(None, path=path)
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page_size = resource.getpagesize()

    def collect(self) -> Iterator[Metric]:
        sweep_dead_processes(self.path)
        yield from self.multiprocess.collect()
        yield InfoMetricFamily("realtime_django_server", "The server variant", value={"server": self.server})
        if PROC.is_dir():
            yield from self.process_metrics()

    def process_metrics(self) -> Iterator[Metric]:
        cpu = rss = vsize = fds = 0.0
        tree = [pid for pid in process_tree(self.root, exclude=self.exclude) if is_running(pid)]
        for pid in tree:
            fields = _stat(pid)
            if fields is None:
                continue
            # stat(5): utime, stime, cutime, cstime are fields 14-17; vsize 23, rss 24 (in pages).
            cpu += sum(int(value) for value in fields[11:15]) / self.ticks
            vsize += int(fields[20])
            rss += int(fields[21]) * self.page_size
            with contextlib.suppress(OSError):  # gone meanwhile
                fds += len(os.listdir(PROC / str(pid) / "fd"))
        about = "of the server's processes (its master and every worker), summed"
        yield CounterMetricFamily("process_cpu_seconds_total", f"CPU seconds {about}", value=cpu)
        yield GaugeMetricFamily("process_resident_memory_bytes", f"Resident memory {about}", value=rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes", f"Virtual memory {about}", value=vsize)
        yield GaugeMetricFamily("process_open_fds", f"Open file descriptors {about}", value=fds)
        yield GaugeMetricFamily(
            "process_max_fds",
            "Open file descriptors allowed per process",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        yield GaugeMetricFamily(
            "realtime_django_server_processes",
            "Processes of the server: its master and every worker",
            value=len(tree),
        )
        root = _stat(self.root)
        if root is not None:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the server's master, seconds since the epoch",
                value=_boot_time() + int(root[19]) / self.ticks,
            )


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on")  # noqa: S104 - a container's
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not os.path.isdir(path):
        print(f"metrics: PROMETHEUS_MULTIPROC_DIR={path!r} is not a folder; no /metrics", file=sys.stderr)
        return 1
    parent = os.getppid()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(path, os.environ.get("SERVER", "unknown"), parent))
    try:
        start_http_server(args.port, addr=args.bind, registry=registry)
    except OSError as exc:
        print(f"metrics: cannot listen on {args.bind}:{args.port}: {exc}; no /metrics", file=sys.stderr)
        return 1
    print(f"metrics: /metrics on {args.bind}:{args.port}", file=sys.stderr, flush=True)
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
