"""Memory of the app under test, before and after opening N sockets, and the cost per connection.

Three sources, whichever fits how the app runs:

- ``docker stats`` for containers whose name matches a regular expression (the compose stack);
- cgroup directories (v2 ``memory.current`` or v1 ``memory.usage_in_bytes``), e.g. on a host
  without the docker CLI, or for one pod's cgroup;
- process ids, with their descendants (``make dev``, or a server started by a test).

Containers and cgroups are measured as the working set (usage minus inactive page cache), which is
what ``docker stats`` and ``kubectl top`` show; page cache would drown the per-socket cost. Process
trees are measured as summed RSS (pages shared by forked workers count once per process, which
cancels out in the before/after difference).

CLI (prints JSON)::

    python -m loadtests.lib.memory snapshot --containers 'app' -o before.json
    python -m loadtests.lib.memory snapshot --containers 'app' -o after.json
    python -m loadtests.lib.memory compare before.json after.json --connections 2000
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER_FORMAT = "{{.Name}}\t{{.MemUsage}}"
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """``"85.21MiB"`` → bytes. Docker prints binary units (KiB, MiB); older versions print kB, MB."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {text!r}")
    return round(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_docker_stats(output: str, pattern: str) -> dict[str, int]:
    """Memory in use per container from ``docker stats --format '{{.Name}}\\t{{.MemUsage}}'`` lines.

    ``MemUsage`` reads ``"<used> / <limit>"``; only containers whose name matches ``pattern``
    (``re.search``) are kept.
    """
    wanted = re.compile(pattern)
    result: dict[str, int] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        name, sep, usage = line.partition("\t")
        if not sep:
            raise ValueError(f"unexpected docker stats line (expected NAME<TAB>USED / LIMIT): {line!r}")
        name = name.strip()
        if wanted.search(name):
            used = usage.split("/", 1)[0]
            result[name] = parse_size(used)
    return result


def docker_memory(pattern: str, timeout: float = 30.0) -> dict[str, int]:
    """Run ``docker stats --no-stream`` (it takes about two seconds: it samples twice)."""
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("the docker CLI is not on PATH; use --cgroup or --pid instead")
    completed = subprocess.run(  # noqa: S603 - fixed argv, no shell; the pattern is applied in Python
        [docker, "stats", "--no-stream", "--format", DOCKER_FORMAT],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"docker stats failed: {completed.stderr.strip()}")
    found = parse_docker_stats(completed.stdout, pattern)
    if not found:
        raise RuntimeError(f"no running container's name matches {pattern!r}")
    return found


def parse_memory_stat(text: str) -> dict[str, int]:
    """A cgroup ``memory.stat`` file: ``key value`` lines."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def cgroup_memory(directory: str | Path) -> int:
    """Working set of a cgroup: usage minus inactive file cache, v2 or v1 layout."""
    path = Path(directory)
    if (path / "memory.current").exists():  # cgroup v2
        usage = int((path / "memory.current").read_text())
        inactive = parse_memory_stat((path / "memory.stat").read_text()).get("inactive_file", 0)
    elif (path / "memory.usage_in_bytes").exists():  # cgroup v1
        usage = int((path / "memory.usage_in_bytes").read_text())
        stat = parse_memory_stat((path / "memory.stat").read_text())
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    else:
        raise RuntimeError(f"{path} has neither memory.current (v2) nor memory.usage_in_bytes (v1)")
    return max(0, usage - inactive)


def parse_vm_rss(status: str) -> int:
    """Resident set size from a ``/proc/<pid>/status`` text, in bytes."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel's "kB" here is KiB
    return 0  # kernel threads and zombies have no VmRSS line


def process_tree(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """``pid`` and its descendants (server workers are children of the process that was started)."""
    seen: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.append(current)
        for children in (proc / str(current) / "task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue  # the thread or process ended meanwhile
    return seen


def pid_memory(pid: int, proc: Path = Path("/proc")) -> int:
    total = 0
    for member in process_tree(pid, proc):
        try:
            total += parse_vm_rss((proc / str(member) / "status").read_text())
        except OSError:
            if member == pid:
                raise RuntimeError(f"process {pid} is not running") from None
    return total


@dataclass
class Snapshot:
    """Bytes in use per measured target (``docker:NAME``, ``cgroup:PATH``, ``pid:PID``)."""

    taken_at: float
    targets: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.targets.values())

    def to_dict(self) -> dict[str, object]:
        return {"taken_at": self.taken_at, "total_bytes": self.total, "targets": self.targets}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "Snapshot":
        targets = data.get("targets")
        if not isinstance(targets, dict):
            raise ValueError("not a memory snapshot: no 'targets' object")
        return cls(taken_at=float(data.get("taken_at", 0.0)), targets={k: int(v) for k, v in targets.items()})


def take_snapshot(
    containers: str = "", cgroups: Iterable[str | Path] = (), pids: Iterable[int] = ()
) -> Snapshot:
    snapshot = Snapshot(taken_at=time.time())
    if containers:
        for name, used in docker_memory(containers).items():
            snapshot.targets[f"docker:{name}"] = used
    for directory in cgroups:
        snapshot.targets[f"cgroup:{directory}"] = cgroup_memory(directory)
    for pid in pids:
        snapshot.targets[f"pid:{pid}"] = pid_memory(pid)
    if not snapshot.targets:
        raise ValueError("nothing to measure: give containers, cgroups or pids")
    return snapshot


def per_connection(before: Snapshot, after: Snapshot, connections: int) -> dict[str, Any]:
    """Memory growth between two snapshots, divided by the sockets open at the second one.

    Only targets present in both count: a container that was replaced in between (a restart gives
    it a new name or a fresh heap) would make the difference meaningless, so it is listed apart.
    """
    common = sorted(set(before.targets) & set(after.targets))
    before_total = sum(before.targets[t] for t in common)
    after_total = sum(after.targets[t] for t in common)
    delta = after_total - before_total
    return {
        "connections": connections,
        "before_bytes": before_total,
        "after_bytes": after_total,
        "delta_bytes": delta,
        "bytes_per_connection": round(delta / connections, 1) if connections > 0 else None,
        "seconds_between": round(after.taken_at - before.taken_at, 1),
        "targets": {
            target: {
                "before": before.targets[target],
                "after": after.targets[target],
                "delta": after.targets[target] - before.targets[target],
            }
            for target in common
        },
        "unmatched_targets": sorted(set(before.targets) ^ set(after.targets)),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.lib.memory", description="Memory of the app under test, per connection."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    snap = commands.add_parser("snapshot", help="measure now and print (or write) a JSON snapshot")
    snap.add_argument("--containers", default="", help="regular expression on docker container names")
    snap.add_argument("--cgroup", action="append", default=[], help="cgroup directory (repeatable)")
    snap.add_argument(
        "--pid", action="append", type=int, default=[], help="process id, with its children (repeatable)"
    )
    snap.add_argument("-o", "--output", help="write the snapshot to this file instead of stdout")
    compare = commands.add_parser("compare", help="memory per connection between two snapshots")
    compare.add_argument("before")
    compare.add_argument("after")
    compare.add_argument("--connections", type=int, required=True, help="sockets open at the second snapshot")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "snapshot":
            text = json.dumps(take_snapshot(args.containers, args.cgroup, args.pid).to_dict(), indent=2)
            if args.output:
                Path(args.output).write_text(text + "\n")
            else:
                print(text)
        else:
            before = Snapshot.from_dict(json.loads(Path(args.before).read_text()))
            after = Snapshot.from_dict(json.loads(Path(args.after).read_text()))
            print(json.dumps(per_connection(before, after, args.connections), indent=2))
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
