"""What the stack's containers say during a capacity run, read from Docker on the host: each
component's memory and CPU (``docker stats``), the processes the kernel killed at a container's
memory limit (``docker events``), and what Nginx's error log said (``docker logs``).
"""

import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.lib import memory

# The containers of each component, by compose service name (compose v1 and v2 separators).
COMPONENTS = {
    "app": r"[_-](app|ws)[_-]\d+$",
    "nginx": r"[_-]nginx[_-]\d+$",
    "redis": r"[_-]redis(-2)?[_-]\d+$",
}


# docker stats: memory in use (memory.DOCKER_FORMAT's two fields), then the share of a CPU.
STATS_FORMAT = memory.DOCKER_FORMAT + "\t{{.CPUPerc}}"


@dataclass(frozen=True)
class Usage:
    """Each component's containers: memory in use (bytes) and CPU (per cent of one core)."""

    memory: dict[str, dict[str, int]]
    cpu_percent: dict[str, float]


def usage_by_component(project: str, stats: Callable[[], str] | None = None) -> Usage:
    """``docker stats`` of ``project``'s containers, summed by component."""
    output = (stats or docker_stats)()
    patterns = {
        component: re.compile(f"^{re.escape(project)}{pattern}") for component, pattern in COMPONENTS.items()
    }
    memory_lines = "\n".join("\t".join(line.split("\t")[:2]) for line in output.splitlines())
    cpu = dict.fromkeys(COMPONENTS, 0.0)
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or not fields[2].strip().endswith("%"):
            continue
        for component, pattern in patterns.items():
            if pattern.search(fields[0]):
                cpu[component] += float(fields[2].strip().rstrip("%"))
    return Usage(
        memory={
            component: memory.parse_docker_stats(memory_lines, p.pattern) for component, p in patterns.items()
        },
        cpu_percent={component: round(value, 1) for component, value in cpu.items()},
    )


# An nginx error-log line: "2026/12/04 00:26:13 [alert] 49#49: *36397 <message>, client: ...".
_NGINX_ERROR = re.compile(
    r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$"
)
NGINX_ERRORS_KEPT = 5


def nginx_errors(log: str) -> dict[str, int]:
    """Nginx's error-log lines (its access log is JSON, skipped) by message, without the time,
    process, connection and client, so that one cause counts once: the most frequent first."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        match = _NGINX_ERROR.match(line.strip())
        if match:
            found[f"[{match.group(1)}] {match.group(2)}"] += 1
    return dict(found.most_common(NGINX_ERRORS_KEPT))


def docker_logs_since(container: str, since: float) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
        ["docker", "logs", "--since", f"{since:.3f}", container],  # noqa: S607 - docker on PATH
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return completed.stdout + completed.stderr


class OutOfMemoryWatch:
    """The project's containers where the kernel killed a process at the container's memory limit.

    Docker reports each kill as an ``oom`` event, also when the container lives on (a server
    restarts its killed worker), and the sockets that process held show up only as "closed 1006".
    The events are followed live: the daemon keeps only its last few hundred events, and the
    health checks of a stack fill those within minutes.
    """

    def __init__(self, project: str, argv: list[str] | None = None) -> None:
        self.argv = argv or [
            "docker", "events", "--filter", "event=oom", "--filter",
            f"label=com.docker.compose.project={project}", "--format", "{{.Actor.Attributes.name}}",
        ]  # fmt: skip
        self.kills: list[str] = []
        self.lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> "OutOfMemoryWatch":
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._follow, args=(self.process,), daemon=True).start()
        return self

    def _follow(self, process: "subprocess.Popen[str]") -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                with self.lock:
                    self.kills.append(line.strip())

    def take(self) -> Counter[str]:
        """The kills since the last call."""
        with self.lock:
            kills, self.kills = self.kills, []
        return Counter(kills)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def docker_stats() -> str:
    completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
        ["docker", "stats", "--no-stream", "--format", STATS_FORMAT],  # noqa: S607 - docker on PATH
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return completed.stdout
