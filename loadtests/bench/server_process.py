"""What a variant's server actually ran with: its command line and its start-file variables.

Read inside the app container, from ``/proc``, once the stack is up: the start file has resolved
every default by then (``: "${NAME:=default}"`` also rewrites a variable compose passed empty), and
``exec``'d the server, so the server's own process holds the final command line and environment.
The report prints these, not the bench's idea of them.

``read_server_process`` runs in the container (``machine.server_process`` sends this file's source
through ``docker exec python -c``), so this module uses the standard library only.
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# Init processes that start the server as their child (compose's `init: true` is docker-init, tini).
INIT_PROCESSES = {"docker-init", "tini", "dumb-init"}
_VARIABLE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")


def start_file_variables(servers_dir: Path, server: str | None = None) -> list[str]:
    """Every upper-case variable the start files read, sorted: all of them, or ``server``'s and
    common.sh's (which every start file sources)."""
    paths = (
        sorted(servers_dir.glob("*.sh"))
        if server is None
        else [servers_dir / "common.sh", servers_dir / f"{server}.sh"]
    )
    names: set[str] = set()
    for path in paths:
        if path.exists():
            names.update(_VARIABLE.findall(path.read_text()))
    return sorted(names)


def _cmdline(proc: Path, pid: int) -> list[str]:
    # Each argument ends with a NUL; an empty one (--forwarded-allow-ips "") is two NULs in a row.
    raw = (proc / str(pid) / "cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _parent(proc: Path, pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ...", where comm may itself hold spaces and ")".
    stat = (proc / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def server_pid(proc: Path, own_pid: int) -> int:
    """The server's main process: PID 1, or PID 1's first child when PID 1 is an init process.

    ``docker exec`` processes (this reader among them) have no parent inside the container, so
    they are never taken for the server.
    """
    first = _cmdline(proc, 1)
    if not first or Path(first[0]).name not in INIT_PROCESSES:
        return 1
    children = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, own_pid):
            continue
        try:
            if _parent(proc, int(entry.name)) == 1:
                children.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    if not children:
        raise LookupError(f"{first[0]} (PID 1) has no child process")
    return min(children)


def read_server_process(proc: Path, names: list[str], own_pid: int) -> dict[str, Any]:
    """``process_settings`` of the container's server process."""
    return process_settings(proc, server_pid(proc, own_pid), names)


def process_settings(proc: Path, pid: int, names: list[str]) -> dict[str, Any]:
    """A process's command line, and those of ``names`` it has a non-empty value for.

    An empty value is compose's "unset": a start file that reads the variable has replaced it with
    its default, so an empty one belongs to another variant's start file and says nothing here.
    """
    wanted = set(names)
    env = {}
    for item in (proc / str(pid) / "environ").read_bytes().split(b"\0"):
        key, _, value = item.decode(errors="replace").partition("=")
        if key in wanted and value:
            env[key] = value
    return {"argv": _cmdline(proc, pid), "env": dict(sorted(env.items()))}


if __name__ == "__main__":
    # In the container: python -c <this source> <names as JSON>
    print(json.dumps(read_server_process(Path("/proc"), json.loads(sys.argv[1]), os.getpid())))
