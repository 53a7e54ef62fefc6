"""The bench's scenarios, one small class each: what one measured run is, and how a stage repeats it.

A scenario turns a target (a variant, or one of the ceiling's targets) into ``Job``s: the
measurement a run adds to, the folder it writes, and the tool's command once the stack's address is
known. Running a job, recording its rows and adding it to its measurement is the same for all of
them (``Bench.measure``).
"""

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench import fanout, sockets
from loadtests.bench.config import BenchConfig, FanoutSettings
from loadtests.bench.locust_csv import LocustRun, scenario_options, spawn_rate
from loadtests.bench.results import Run
from loadtests.bench.stack import memory_pattern
from loadtests.bench.tools import Tool
from loadtests.bench.wrk import WrkRun
from loadtests.fanout.generator import SENDER_RATE
from loadtests.lib import names

# Planned seconds of a tool's start, for the progress estimate only.
PLAN_LOCUST_START = 2.0
PLAN_LOCUST_PROCESSES_START = 5.0
PLAN_WRK_START = 1.0
# Seconds a capacity run lasts past its ramp and settle time: Locust's -t also counts the memory
# snapshot before the first socket, and each `docker stats` takes 2 s or more on a busy machine.
CAPACITY_MARGIN = 15.0


@dataclass(frozen=True)
class Target:
    """What a run measures: a variant under an app profile, or a ceiling target on its own port."""

    name: str
    kind: str = "variant"
    port: int | None = None  # None: the stack's published Nginx port
    profile: str = ""  # the app profile's name (variants only)


@dataclass(frozen=True)
class Job:
    """One measured run."""

    target: Target
    scenario: str
    case: str
    tool: str
    row: str  # the tool's row that carries the figure
    folder: str  # the run's folder, within the stage's
    label: str  # the progress line
    planned: float  # seconds, for the progress estimate
    command: Callable[[str, Path], Tool]  # (base URL, run folder) -> the tool's run
    finish: Callable[[Run, Path], None] | None = None  # reads what the run left beside its rows


def slug(text: str) -> str:
    """A name for a folder: letters and digits, the rest as single dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "root"


class Scenario:
    """The runs of one scenario: ``repeats`` rounds, each a run per case."""

    name = ""

    def __init__(self, config: BenchConfig, workers: int) -> None:
        self.config = config
        self.workers = workers

    def locust_planned(self, seconds: float) -> float:
        return seconds + (PLAN_LOCUST_PROCESSES_START if self.workers else PLAN_LOCUST_START)

    def jobs(self, target: Target, k: int) -> list[Job]:
        raise NotImplementedError

    def rounds(self, target: Target) -> list[Job]:
        """Every run, round by round: a drift of the machine spreads over every case alike."""
        return [job for k in range(1, self.config.repeats + 1) for job in self.jobs(target, k)]

    def of_round(self, k: int) -> str:
        return f"run {k}/{self.config.repeats}"


class HttpLocust(Scenario):
    """Each endpoint alone, Locust users in a closed loop; statistics reset once all have started."""

    name = "http"

    def __init__(self, config: BenchConfig, workers: int, endpoints: tuple[str, ...] | None = None) -> None:
        super().__init__(config, workers)
        self.endpoints = endpoints or config.http.endpoints

    def jobs(self, target: Target, k: int) -> list[Job]:
        return [self._job(target, endpoint, k) for endpoint in self.endpoints]

    def _job(self, target: Target, endpoint: str, k: int) -> Job:
        http = self.config.http
        path = names.HTTP_ENDPOINTS[endpoint]
        rate = spawn_rate(http.users, self.workers)

        def command(host: str, run_dir: Path) -> LocustRun:
            return LocustRun(
                "http", host, http.users, rate, http.duration + http.users / rate, run_dir / "locust",
                self.workers, ("--http-endpoints", endpoint), reset_stats=True,
            )  # fmt: skip

        prefix = f"{target.name} " if target.kind == "ceiling" else ""
        return Job(
            target, "http", path, "locust", path,
            folder=f"http-{slug(target.name)}-{endpoint}-locust-{k}",
            label=f"{prefix}http {path} (locust) {self.of_round(k)}",
            planned=self.locust_planned(http.duration + 1),
            command=command,
        )  # fmt: skip

    def warm_up(self, host: str, run_dir: Path) -> LocustRun:
        http = self.config.http
        return LocustRun(
            "http", host, http.users, spawn_rate(http.users, self.workers), self.config.warmup,
            run_dir / "locust", self.workers, ("--http-endpoints", ",".join(self.endpoints)),
        )  # fmt: skip


class HttpWrk(HttpLocust):
    """The same endpoints with wrk, whose own ceiling is far above Locust's."""

    name = "wrk"

    def _job(self, target: Target, endpoint: str, k: int) -> Job:
        wrk = self.config.wrk
        path = names.HTTP_ENDPOINTS[endpoint]
        prefix = f"{target.name} " if target.kind == "ceiling" else ""
        return Job(
            target, "http", path, "wrk", path,
            folder=f"http-{slug(target.name)}-{endpoint}-wrk-{k}",
            label=f"{prefix}http {path} (wrk) {self.of_round(k)}",
            planned=wrk.duration + PLAN_WRK_START,
            command=lambda host, _: WrkRun(f"{host}{path}", wrk.connections, wrk.threads, wrk.duration),
        )  # fmt: skip


class Echo(Scenario):
    """WebSocket echo: every user sends every ``echo.interval`` seconds and waits for the reply."""

    name = "echo"

    def jobs(self, target: Target, k: int) -> list[Job]:
        echo = self.config.echo
        rate = spawn_rate(echo.users, self.workers)
        prefix = f"{target.name} " if target.kind == "ceiling" else ""
        return [
            Job(
                target, "echo", names.ECHO_PATH, "locust", names.ECHO_ROUND_TRIP,
                folder=f"echo-{slug(target.name)}-{k}",
                label=f"{prefix}echo {self.of_round(k)}",
                planned=self.locust_planned(echo.duration + 2),
                command=lambda host, run_dir: LocustRun(
                    "echo", host, echo.users, rate, echo.duration + echo.users / rate, run_dir / "locust",
                    self.workers, scenario_options([("--echo-interval", echo.interval)]),
                ),
            )
        ]  # fmt: skip

    def warm_up(self, host: str, run_dir: Path) -> LocustRun:
        echo = self.config.echo
        return LocustRun(
            "echo", host, echo.users, spawn_rate(echo.users, self.workers), self.config.warmup,
            run_dir / "locust", self.workers, scenario_options([("--echo-interval", echo.interval)]),
        )  # fmt: skip


class Capacity(Scenario):
    """Idle sockets opened at a fixed rate; the app containers' memory growth per socket.

    Measured once per stack, whatever the repeats: the processes keep the memory the first run grew
    (the allocator reuses it), so a second run in the same containers measures almost no growth.
    """

    name = "capacity"

    def rounds(self, target: Target) -> list[Job]:
        return self.jobs(target, 1)

    def of_round(self, k: int) -> str:
        return "(once per stack)"

    def seconds(self) -> float:
        cap = self.config.capacity
        return cap.sockets / cap.spawn_rate + cap.settle + CAPACITY_MARGIN

    def jobs(self, target: Target, k: int) -> list[Job]:
        cap = self.config.capacity

        def command(host: str, run_dir: Path) -> LocustRun:
            return LocustRun(
                "capacity", host, cap.sockets, cap.spawn_rate, self.seconds(), run_dir / "locust",
                self.workers,
                scenario_options([
                    ("--capacity-path", cap.path),
                    ("--capacity-memory-containers", memory_pattern(self.config.project)),
                    ("--capacity-settle", cap.settle),
                    ("--capacity-report", str(run_dir / "memory.json")),
                ]),
                full_history=True,
            )  # fmt: skip

        return [
            Job(
                target, "capacity", f"{cap.sockets} sockets", "locust", names.ws_connect(cap.path),
                folder=f"capacity-{k}",
                label=f"capacity {cap.sockets} sockets {self.of_round(k)}",
                planned=self.locust_planned(self.seconds()),
                command=command,
                finish=read_memory_report,
            )
        ]  # fmt: skip


def read_memory_report(run: Run, run_dir: Path) -> None:
    memory_file = run_dir / "memory.json"
    if memory_file.exists():
        run.memory = json.loads(memory_file.read_text())
    elif run.error is None:
        run.error = f"no memory report (see {run.dir}/locust.log)"


class Chat(Scenario):
    """Room fan-out: one sender per room, every other member receives; one case per room count."""

    name = "chat"

    def seconds(self) -> float:
        chat = self.config.chat
        return chat.users / spawn_rate(chat.users, self.workers) + chat.settle + chat.duration

    def rounds(self, target: Target) -> list[Job]:
        # Case by case: the rounds of one room count, then the next.
        return [
            self._job(target, rooms, k)
            for rooms in self.config.chat.rooms
            for k in range(1, self.config.repeats + 1)
        ]

    def _job(self, target: Target, rooms: int, k: int) -> Job:
        chat = self.config.chat
        rate = spawn_rate(chat.users, self.workers)
        return Job(
            target, "chat", f"{chat.users} users, {rooms} room" + ("s" if rooms > 1 else ""), "locust",
            names.CHAT_DELIVERY,
            folder=f"chat-{rooms}-rooms-{k}",
            label=f"chat {chat.users} users in {rooms} room(s) {self.of_round(k)}",
            planned=self.locust_planned(self.seconds()),
            command=lambda host, run_dir: LocustRun(
                "chat", host, chat.users, rate, self.seconds(), run_dir / "locust", self.workers,
                scenario_options([
                    ("--chat-rooms", rooms), ("--chat-interval", chat.interval),
                    ("--chat-room", f"bench-{k}"), ("--chat-settle", chat.settle),
                ]),
            ),
        )  # fmt: skip


class Fanout(Scenario):
    """Fan-out throughput: fixed rooms and members, the message rate raised step by step until the
    delivery p99 crosses its threshold (or anything fails); the lean generator, not Locust, which
    fires one event per delivery and would be the limit long before the server."""

    name = "fanout"

    def settings(self, target: Target) -> FanoutSettings:
        """The ceiling steps on, up to what the members may send: it must reach its own limit, and
        fanning out within each server process, it delivers fewer copies of each message."""
        settings = self.config.fanout
        if target.kind != "ceiling":
            return settings
        return dataclasses.replace(settings, max_rate=settings.rooms * settings.members * SENDER_RATE)

    def jobs(self, target: Target, k: int) -> list[Job]:
        settings = self.settings(target)
        prefix = f"{target.name} " if target.kind == "ceiling" else ""
        case = fanout.case(settings)

        def command(host: str, run_dir: Path) -> fanout.FanoutRun:
            return fanout.FanoutRun(host, settings, run_dir / "fanout.json")

        return [
            Job(
                target, "fanout", case, "fanout", fanout.ROW,
                folder=f"fanout-{slug(target.name)}-{k}",
                label=f"{prefix}fan-out throughput {self.of_round(k)}",
                planned=fanout.FanoutRun("", settings, Path()).seconds,
                command=command,
            )
        ]  # fmt: skip


class Sockets(Scenario):
    """Idle chat sockets stepped up until a step fails, one room for all (``loadtests/sockets``): how
    many a stack holds, what stopped it, and memory per socket of the app, Nginx and Redis. Each
    run has a stage and a stack of its own (``Bench.sockets_stage``), with the Nginx the sockets
    need: ``jobs(target, k)`` is run ``k``, never a round of several in one stack."""

    name = "sockets"

    def jobs(self, target: Target, k: int) -> list[Job]:
        settings = self.config.sockets

        def command(host: str, run_dir: Path) -> sockets.SocketsRun:
            return sockets.SocketsRun(host, self.config.project, settings, run_dir / "sockets.json")

        return [
            Job(
                target, "sockets", sockets.case(settings), "sockets", sockets.ROW,
                folder=f"sockets-{k}",
                label=f"sockets to the limit {self.of_round(k)}",
                planned=sockets.SocketsRun("", "", settings, Path()).seconds,
                command=command,
            )
        ]  # fmt: skip
