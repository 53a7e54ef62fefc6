"""core/metrics_exporter.py: the sum over a container's processes, without the gauges of dead ones."""

import os
import subprocess
import sys
from pathlib import Path

from core import metrics_exporter
from core.metrics_exporter import ServerCollector, process_tree, sweep_dead_processes

# A worker: counts one request and one open connection in the shared folder, then waits for its
# stdin to close (alive) or exits at once (dead).
WORKER = """
import sys
from prometheus_client import Counter, Gauge
Counter("requests_total", "r").inc()
Gauge("connections", "c", multiprocess_mode="livesum").inc()
print("counted", flush=True)
if sys.argv[1] == "stay":
    sys.stdin.read()
"""


def worker(folder: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "counted\n"
    return process


def samples(collector: ServerCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in collector.collect()
        for sample in metric.samples
    }


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_sweep_forgets_the_live_gauges_of_dead_processes_only(tmp_path: Path):
    dead, alive = dead_pid(), os.getpid()
    for name in (
        f"gauge_livesum_{dead}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_livesum_{alive}.db",
    ):
        (tmp_path / name).touch()
    assert sweep_dead_processes(str(tmp_path)) == [dead]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_livesum_{alive}.db"]
    )


def test_a_scrape_adds_up_every_process_and_drops_the_gauges_of_dead_ones(tmp_path: Path):
    staying = worker(tmp_path, "stay")
    try:
        worker(tmp_path, "exit").wait()
        collector = ServerCollector(str(tmp_path), "uvicorn", root=os.getpid(), exclude=-1)
        scraped = samples(collector)
        assert scraped[("requests_total", ())] == 2  # the dead worker's requests still count
        assert scraped[("connections", ())] == 1  # its open connection does not
        assert scraped[("realtime_django_server_info", (("server", "uvicorn"),))] == 1
        assert scraped[("realtime_django_server_processes", ())] >= 2  # this test, its live worker
        assert scraped[("process_resident_memory_bytes", ())] > 0
        assert scraped[("process_cpu_seconds_total", ())] > 0
    finally:
        staying.communicate("")


def test_the_process_tree_leaves_the_exporter_out():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in process_tree(os.getpid(), exclude=-1)
        assert child.pid not in process_tree(os.getpid(), exclude=child.pid)
        assert os.getpid() in process_tree(os.getpid(), exclude=child.pid)
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_not_running():
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not metrics_exporter.is_running(child.pid)
    child.wait()
    assert metrics_exporter.is_running(os.getpid())


def test_the_exporter_refuses_to_start_without_its_folder(monkeypatch, capsys):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics")
    assert metrics_exporter.main(["--port", "0"]) == 1
    assert "not a folder" in capsys.readouterr().err
