import json
import os

import pytest

from loadtests.lib import memory

# `docker stats --no-stream --format '{{.Name}}\t{{.MemUsage}}'` as the compose stack prints it.
DOCKER_STATS = (
    "realtime-django-app-1\t85.21MiB / 23.47GiB\n"
    "realtime-django-app-2\t1.5GiB / 23.47GiB\n"
    "realtime-django-nginx-1\t7.5MiB / 23.47GiB\n"
    "realtime-django-redis-1\t3.16MiB / 23.47GiB\n"
    "\n"
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0B", 0),
        ("512B", 512),
        ("1KiB", 1024),
        ("85.21MiB", round(85.21 * 1024**2)),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2TiB", 2 * 1024**4),
        ("1.2kB", 1200),  # older docker versions print decimal units
        ("3MB", 3_000_000),
        ("1GB", 10**9),
        (" 7 MiB ", 7 * 1024**2),
    ],
)
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("bad", ["--", "", "12 parsecs", "MiB"])
def test_parse_size_refuses_garbage(bad):
    with pytest.raises(ValueError):
        memory.parse_size(bad)


def test_docker_stats_keeps_the_containers_matching_the_pattern():
    assert memory.parse_docker_stats(DOCKER_STATS, r"-app-\d+$") == {
        "realtime-django-app-1": round(85.21 * 1024**2),
        "realtime-django-app-2": 3 * 1024**3 // 2,
    }
    assert set(memory.parse_docker_stats(DOCKER_STATS, "nginx|redis")) == {
        "realtime-django-nginx-1",
        "realtime-django-redis-1",
    }
    assert memory.parse_docker_stats(DOCKER_STATS, "postgres") == {}


def test_docker_stats_refuses_an_unexpected_format():
    with pytest.raises(ValueError):
        memory.parse_docker_stats("realtime-django-app-1 85MiB / 1GiB", "app")
    with pytest.raises(ValueError):
        memory.parse_docker_stats("realtime-django-app-1\t-- / --", "app")


def test_cgroup_v2_working_set(tmp_path):
    (tmp_path / "memory.current").write_text("104857600\n")
    (tmp_path / "memory.stat").write_text(
        "anon 50000000\nfile 54857600\ninactive_file 4857600\nactive_file 1\n"
    )
    assert memory.cgroup_memory(tmp_path) == 100_000_000


def test_cgroup_v1_working_set(tmp_path):
    (tmp_path / "memory.usage_in_bytes").write_text("2000000\n")
    (tmp_path / "memory.stat").write_text("cache 10\ninactive_file 999\ntotal_inactive_file 500000\n")
    assert memory.cgroup_memory(tmp_path) == 1_500_000


def test_cgroup_without_memory_files(tmp_path):
    with pytest.raises(RuntimeError):
        memory.cgroup_memory(tmp_path)


def _fake_process(proc, pid, rss_kib, children=()):
    task = proc / str(pid) / "task" / str(pid)
    task.mkdir(parents=True)
    (task / "children").write_text(" ".join(map(str, children)))
    (proc / str(pid) / "status").write_text(
        f"Name:\tpython\nVmPeak:\t  9 kB\nVmRSS:\t  {rss_kib} kB\nThreads:\t1\n"
    )


def test_pid_memory_sums_the_process_tree(tmp_path):
    _fake_process(tmp_path, 100, 1000, children=(101, 102))
    _fake_process(tmp_path, 101, 200)
    _fake_process(tmp_path, 102, 300, children=(103,))
    _fake_process(tmp_path, 103, 50)
    assert sorted(memory.process_tree(100, tmp_path)) == [100, 101, 102, 103]
    assert memory.pid_memory(100, tmp_path) == (1000 + 200 + 300 + 50) * 1024
    with pytest.raises(RuntimeError):
        memory.pid_memory(999, tmp_path)


def test_vm_rss_of_a_kernel_thread_is_zero():
    assert memory.parse_vm_rss("Name:\tkthreadd\nState:\tS\n") == 0


def test_per_connection_uses_targets_present_in_both_snapshots():
    before = memory.Snapshot(taken_at=10.0, targets={"docker:app-1": 100_000_000, "docker:old": 5})
    after = memory.Snapshot(taken_at=40.0, targets={"docker:app-1": 120_000_000, "docker:new": 7})
    report = memory.per_connection(before, after, connections=1000)
    assert report["delta_bytes"] == 20_000_000
    assert report["bytes_per_connection"] == 20_000.0
    assert report["seconds_between"] == 30.0
    assert report["unmatched_targets"] == ["docker:new", "docker:old"]
    assert memory.per_connection(before, after, connections=0)["bytes_per_connection"] is None


def test_snapshot_files_and_the_cli(tmp_path, capsys):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(memory.Snapshot(1.0, {"pid:1": 1000}).to_dict()))
    after.write_text(json.dumps(memory.Snapshot(2.0, {"pid:1": 6000}).to_dict()))
    assert memory.main(["compare", str(before), str(after), "--connections", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_per_connection"] == 500.0


def test_cli_snapshot_of_a_real_process(tmp_path):
    output = tmp_path / "now.json"
    assert memory.main(["snapshot", "--pid", str(os.getpid()), "-o", str(output)]) == 0
    snapshot = memory.Snapshot.from_dict(json.loads(output.read_text()))
    assert snapshot.total > 0


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert memory.main(["snapshot"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
