"""The bench: the generator's ceiling, then every variant under every app profile, side by side.

For each stage: up (``make up``), warm-up, the measured runs (each repeated, rounds interleaved so
that a drift of the machine spreads over every endpoint alike), down (``make clean``). Every run's
raw figures go into ``results.json`` as soon as the stage ends; the report is rendered from that
file alone (``loadtests.bench.report``).
"""

import dataclasses
import datetime as dt
import json
import math
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.bench import machine, procs, report
from loadtests.bench.analysis import ASGI_HELLO, NGINX_FIXED
from loadtests.bench.config import BenchConfig, Profile, locust_mode, locust_workers
from loadtests.bench.locust_csv import LocustOutputError, LocustRun, read_run, scenario_options, spawn_rate
from loadtests.bench.progress import Progress
from loadtests.bench.stack import (
    LOAD_TEST_LIMITS,
    Stack,
    StackError,
    memory_pattern,
    write_override,
)
from loadtests.bench.wrk import WrkOutputError, WrkRun, parse_output
from loadtests.lib import names
from stackctl import free_port, inherited_environment

SCHEMA_VERSION = 1
CEILING_DIR = Path(__file__).resolve().parent / "ceiling"
CEILING_COMPOSE = CEILING_DIR / "compose.yaml"
CEILING_SERVER = "uvicorn"  # the hello-world runs under this variant's own start file
# The hello-world's HTTP answers carry this header (ceiling/hello/config/asgi.py): proof that it,
# not Django, replied.
CEILING_HEADER = "x-bench-ceiling"

# Planned seconds, for the progress estimate only.
PLAN_UP = 45.0
PLAN_SCALE = 30.0
PLAN_DOWN = 10.0
PLAN_LOCUST_START = 2.0
PLAN_LOCUST_PROCESSES_START = 5.0
PLAN_WRK_START = 1.0
# Seconds a capacity run lasts past its ramp and settle time: Locust's -t also counts the memory
# snapshot before the first socket, and each `docker stats` takes 2 s or more on a busy machine.
CAPACITY_MARGIN = 15.0
STAGE_ATTEMPTS = 2  # a stage whose stack fails is run once more from scratch


def _settings_from_environment() -> list[str]:
    return [
        f"{key}={shlex.quote(value)}"
        for key, value in sorted(os.environ.items())
        if key.startswith("BENCH_") or key == "WEB_CONCURRENCY"
    ]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "root"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class StageAborted(Exception):  # noqa: N818 - control flow: the rest of a stage is skipped
    """The stage's stack is gone or never came up; the rest of its steps are skipped."""


@dataclass
class Step:
    label: str
    planned: float
    action: Callable[[], None]


@dataclass
class Stage:
    kind: str  # "ceiling" or "variant"
    target: str
    profile: Profile | None
    steps: list[Step] = field(default_factory=list)
    teardown: Step | None = None

    @property
    def name(self) -> str:
        return self.target if self.profile is None else f"{self.target} · {self.profile.name}"


class Bench:
    def __init__(self, config: BenchConfig, out_dir: Path, argv: list[str]) -> None:
        self.config = config
        self.out = out_dir
        self.workers = locust_workers(config.locust_processes)
        self.stack: Stack | None = None
        self.measurements: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        self.results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "started_at": utc_now(),
            # The command that produced the results, with the settings it took from the environment.
            "command": [*_settings_from_environment(), "python", "-m", "loadtests.bench", *argv],
            "machine": machine.machine(),
            "host_versions": machine.host_versions(),
            "stack_versions": {},
            "settings": self._settings(),
            "stacks": [],
            "measurements": [],
            "errors": [],
            "notes": [],  # what went wrong and was recovered from (a retried `make up`)
        }

    # --- settings and bookkeeping -------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        c = self.config
        sections = {
            f.name: dataclasses.asdict(getattr(c.sections, f.name)) for f in dataclasses.fields(c.sections)
        }
        return {
            "quick": c.quick,
            "servers": list(c.servers),
            "profiles": [{"name": p.name, "env": dict(p.env)} for p in c.profiles],
            "scenarios": list(c.scenarios),
            "repeats": c.repeats,
            "warmup_s": c.warmup,
            "ceiling": c.ceiling,
            "generator_threshold": c.threshold,
            "locust_processes": c.locust_processes,
            "locust_workers": self.workers,
            "locust_mode": locust_mode(c.locust_processes),
            "wrk_threads": WrkRun("", c.wrk.connections, c.wrk.threads, c.wrk.duration).thread_count,
            "web_concurrency": c.web_concurrency,
            "replicas": 1,
            "nginx_limits": dict(LOAD_TEST_LIMITS),
            "project": c.project,
            **sections,
        }

    def measurement(
        self, target: str, profile: str, scenario: str, case: str, tool: str, row: str, kind: str = "variant"
    ) -> dict[str, Any]:
        key = (target, profile, scenario, case, tool)
        if key not in self.measurements:
            self.measurements[key] = {
                "kind": kind,
                "target": target,
                "profile": profile,
                "scenario": scenario,
                "case": case,
                "tool": tool,
                "row": row,
                "runs": [],
            }
            self.results["measurements"].append(self.measurements[key])
        return self.measurements[key]

    def error(self, stage: str, step: str, message: str) -> None:
        self.results["errors"].append({"stage": stage, "step": step, "message": message})
        print(f"    ERROR in {stage} / {step}: {message}", file=sys.stderr, flush=True)

    def save(self) -> Path:
        path = self.out / "results.json"
        path.write_text(json.dumps(self.results, indent=2) + "\n")
        return path

    # --- running things -----------------------------------------------------------------------

    def locust_planned(self, seconds: float) -> float:
        return seconds + (PLAN_LOCUST_PROCESSES_START if self.workers else PLAN_LOCUST_START)

    def run_locust(self, run_dir: Path, run: LocustRun, row: str) -> dict[str, Any]:
        """One Locust run; its rows (or what went wrong) as a run record."""
        run_dir.mkdir(parents=True, exist_ok=True)
        command = run.command(sys.executable)
        started_at, started = utc_now(), time.monotonic()
        result = procs.run(
            command, timeout=run.timeout, log=run_dir / "locust.log", env=inherited_environment()
        )
        record: dict[str, Any] = {
            "tool": "locust",
            "started_at": started_at,
            "seconds": round(time.monotonic() - started, 2),
            "exit_code": result.returncode,
            "command": [Path(part).name if part == sys.executable else part for part in command],
            "dir": str(run_dir.relative_to(self.out)),
        }
        try:
            rows, failures = read_run(run.prefix)
        except (LocustOutputError, OSError) as exc:
            record["error"] = f"{exc} (exit {result.returncode}; see {record['dir']}/locust.log)"
            return record
        record["rows"] = rows
        record["failure_samples"] = failures
        if result.timed_out:
            record["error"] = f"Locust did not stop within {run.timeout:.0f} s"
        elif result.returncode not in (0, 1):  # 1: some requests failed, which the figures show
            record["error"] = f"Locust exited with {result.returncode} (see {record['dir']}/locust.log)"
        elif rows.get(row, {}).get("requests", 0) == 0:
            record["error"] = f"no {row!r} in this run (see {record['dir']}/locust.log)"
        return record

    def run_wrk(self, run_dir: Path, run: WrkRun, path: str) -> dict[str, Any]:
        run_dir.mkdir(parents=True, exist_ok=True)
        command = run.command()
        started_at, started = utc_now(), time.monotonic()
        result = procs.run(command, timeout=run.timeout)
        (run_dir / "wrk.txt").write_text(f"$ {' '.join(command)}\n{result.output}")
        record: dict[str, Any] = {
            "tool": "wrk",
            "started_at": started_at,
            "seconds": round(time.monotonic() - started, 2),
            "exit_code": result.returncode,
            "command": command,
            "dir": str(run_dir.relative_to(self.out)),
        }
        try:
            record["rows"] = {path: parse_output(result.output)}
        except WrkOutputError as exc:
            record["error"] = f"{exc}: {result.tail(5)}"
        return record

    def add_run(self, measurement: dict[str, Any], record: dict[str, Any], stage: Stage) -> None:
        record["index"] = len(measurement["runs"]) + 1
        measurement["runs"].append(record)
        step = f"{measurement['scenario']} {measurement['case']} ({measurement['tool']})"
        if "error" in record:
            self.error(stage.name, step, record["error"])
        main = record.get("rows", {}).get(measurement["row"], {})
        mostly_failed = main.get("failures", 0) > main.get("requests", 0) / 2
        if ("error" in record or mostly_failed) and self.stack is not None and not self.stack.healthy():
            # The rest of the stage would only measure a dead stack.
            raise StageAborted(f"the stack stopped answering on {self.stack.url}/healthz")

    # --- stages -------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        stages = []
        if self.config.ceiling and set(self.config.scenarios) & {"http", "wrk", "echo"}:
            stages.append(self.ceiling_stage())
        for server in self.config.servers:
            for profile in self.config.profiles:
                stages.append(self.variant_stage(server, profile))
        return stages

    def ceiling_stage(self) -> Stage:
        c = self.config
        stage = Stage("ceiling", "ceiling", None)
        stage_dir = self.out / "runs" / "ceiling"
        fixed_port = free_port()
        stage.steps.append(
            Step(
                "up (Nginx fixed response, ASGI hello-world)",
                PLAN_UP,
                lambda: self.ceiling_up(stage, fixed_port),
            )
        )
        targets = {NGINX_FIXED: fixed_port, ASGI_HELLO: None}
        ping = names.HTTP_ENDPOINTS["ping"]
        if c.warmup > 0:
            for target, port in targets.items():
                stage.steps.append(
                    Step(
                        f"warm-up {target}",
                        self.locust_planned(c.warmup),
                        lambda t=target, p=port: self.warmup_http(stage_dir / f"warmup-{t}", p, ("ping",)),
                    )
                )
        for k in range(1, c.repeats + 1):
            for target, port in targets.items():
                if c.runs("http"):
                    stage.steps.append(
                        Step(
                            f"{target} http {ping} (locust) run {k}/{c.repeats}",
                            self.locust_planned(c.http.duration + 1),
                            lambda t=target, p=port, k=k: self.http_run(
                                stage, stage_dir, "ping", k, target=t, port=p, kind="ceiling"
                            ),
                        )
                    )
                if c.runs("wrk"):
                    stage.steps.append(
                        Step(
                            f"{target} http {ping} (wrk) run {k}/{c.repeats}",
                            c.wrk.duration + PLAN_WRK_START,
                            lambda t=target, p=port, k=k: self.wrk_run(
                                stage, stage_dir, "ping", k, target=t, port=p, kind="ceiling"
                            ),
                        )
                    )
            if c.runs("echo"):
                stage.steps.append(
                    Step(
                        f"{ASGI_HELLO} echo run {k}/{c.repeats}",
                        self.locust_planned(c.echo.duration + 2),
                        lambda k=k: self.echo_run(stage, stage_dir, k, target=ASGI_HELLO, kind="ceiling"),
                    )
                )
        stage.teardown = Step("down", PLAN_DOWN, self.down)
        return stage

    def variant_stage(self, server: str, profile: Profile) -> Stage:
        c = self.config
        stage = Stage("variant", server, profile)
        stage_dir = self.out / "runs" / slug(f"{server}-{profile.name}")
        stage.steps.append(Step("up", PLAN_UP, lambda: self.variant_up(stage)))
        if c.warmup > 0:
            if c.runs("http") or c.runs("wrk"):
                stage.steps.append(
                    Step(
                        "warm-up http",
                        self.locust_planned(c.warmup),
                        lambda: self.warmup_http(stage_dir / "warmup-http", None, c.http.endpoints),
                    )
                )
            if set(c.scenarios) & {"echo", "chat", "capacity"}:
                stage.steps.append(
                    Step(
                        "warm-up echo",
                        self.locust_planned(c.warmup),
                        lambda: self.warmup_echo(stage_dir / "warmup-echo"),
                    )
                )
        for k in range(1, c.repeats + 1):
            for endpoint in c.http.endpoints if c.runs("http") else ():
                stage.steps.append(
                    Step(
                        f"http {names.HTTP_ENDPOINTS[endpoint]} (locust) run {k}/{c.repeats}",
                        self.locust_planned(c.http.duration + 1),
                        lambda e=endpoint, k=k: self.http_run(stage, stage_dir, e, k),
                    )
                )
        for k in range(1, c.repeats + 1):
            for endpoint in c.http.endpoints if c.runs("wrk") else ():
                stage.steps.append(
                    Step(
                        f"http {names.HTTP_ENDPOINTS[endpoint]} (wrk) run {k}/{c.repeats}",
                        c.wrk.duration + PLAN_WRK_START,
                        lambda e=endpoint, k=k: self.wrk_run(stage, stage_dir, e, k),
                    )
                )
        for k in range(1, c.repeats + 1) if c.runs("echo") else ():
            stage.steps.append(
                Step(
                    f"echo run {k}/{c.repeats}",
                    self.locust_planned(c.echo.duration + 2),
                    lambda k=k: self.echo_run(stage, stage_dir, k),
                )
            )
        for k in range(1, c.repeats + 1) if c.runs("capacity") else ():
            stage.steps.append(
                Step(
                    f"capacity {c.capacity.sockets} sockets run {k}/{c.repeats}",
                    self.locust_planned(self.capacity_seconds()),
                    lambda k=k: self.capacity_run(stage, stage_dir, k),
                )
            )
        if c.runs("chat"):
            stage.steps.append(
                Step(
                    f"scale to {c.chat.replicas} replicas",
                    PLAN_SCALE,
                    lambda: self.scale(stage, c.chat.replicas),
                )
            )
            for rooms in c.chat.rooms:
                for k in range(1, c.repeats + 1):
                    stage.steps.append(
                        Step(
                            f"chat {c.chat.users} users in {rooms} room(s) run {k}/{c.repeats}",
                            self.locust_planned(self.chat_seconds()),
                            lambda r=rooms, k=k: self.chat_run(stage, stage_dir, r, k),
                        )
                    )
        stage.teardown = Step("down", PLAN_DOWN, self.down)
        return stage

    # --- stage actions ------------------------------------------------------------------------

    def _stack_env(self) -> dict[str, str]:
        return {"WEB_CONCURRENCY": str(self.config.web_concurrency)}

    def _record_stack(self, stage: Stage, started: float, extra: dict[str, Any] | None = None) -> None:
        stack = self.stack
        assert stack is not None
        stage_slug = slug(stage.name)
        config_file = self.out / "stacks" / stage_slug / "compose-config.yaml"
        try:
            config_file.write_text(stack.compose_config())
            config_path: str | None = str(config_file.relative_to(self.out))
        except StackError as exc:
            self.error(stage.name, "compose config", str(exc))
            config_path = None
        services = {
            service: stack.containers(service)
            for service in ("nginx", "app", "ws", "redis", "postgres", "fixed")  # fixed: the ceiling's
        }
        # What each server process runs with, read from the process itself (the report's settings).
        profile_names = stage.profile.env if stage.profile else {}
        servers = {
            service: machine.server_settings(stack, services[service][0], profile_names)
            for service in ("app", "ws")
            if services[service]
        }
        for service, found in servers.items():
            if "error" in found:
                self.error(stage.name, f"{service} server settings", found["error"])
        self.results["stacks"].append(
            {
                "kind": stage.kind,
                "target": stage.target,
                "profile": stage.profile.name if stage.profile else None,
                "server": stack.server,
                "port": stack.port,
                "up_seconds": round(time.monotonic() - started, 1),
                "image": machine.image_of(stack),
                "containers": {service: found for service, found in services.items() if found},
                "compose_config": config_path,
                "docker_userland_proxy": machine.docker_userland_proxy(stack.port),
                "servers": servers,
                **(extra or {}),
            }
        )
        if not self.results["stack_versions"]:
            self.results["stack_versions"] = machine.stack_versions(stack)

    def _new_stack(self, server: str, stage: Stage, compose_files: list[Path], env: dict[str, str]) -> Stack:
        logs = self.out / "stacks" / slug(stage.name)
        logs.mkdir(parents=True, exist_ok=True)
        return Stack(
            server=server,
            project=self.config.project,
            port=free_port(),
            logs=logs,
            compose_files=compose_files,
            env={**self._stack_env(), **env},
        )

    def variant_up(self, stage: Stage) -> None:
        assert stage.profile is not None
        files: list[Path] = []
        if stage.profile.env:
            files.append(
                write_override(
                    self.out / "stacks" / slug(stage.name) / "profile.compose.yaml", stage.profile.env
                )
            )
        self.stack = self._new_stack(stage.target, stage, files, {})
        started = time.monotonic()
        self.stack.up(replicas=1)
        self.check_profile(stage.profile)
        self._record_stack(stage, started, {"profile_env": dict(stage.profile.env)})

    def check_profile(self, profile: Profile) -> None:
        """Every app container runs with the profile's variables (else its figures would lie)."""
        assert self.stack is not None
        for service in ("app", "ws"):
            for container in self.stack.containers(service):
                env = self.stack.container_env(container)
                wrong = {k: env.get(k) for k, v in profile.env.items() if env.get(k) != v}
                if wrong:
                    raise StackError(f"{container} lacks profile {profile.name!r}'s {wrong}")

    def ceiling_up(self, stage: Stage, fixed_port: int) -> None:
        self.stack = self._new_stack(
            CEILING_SERVER, stage, [CEILING_COMPOSE], {"BENCH_FIXED_PORT": str(fixed_port)}
        )
        started = time.monotonic()
        self.stack.up(replicas=1)
        # Prove each target is what it claims before measuring it.
        status, headers, _ = self.stack.get(names.HTTP_ENDPOINTS["ping"])
        if status != 200 or CEILING_HEADER not in headers:
            raise StackError(
                f"the ASGI hello-world does not answer {names.HTTP_ENDPOINTS['ping']} "
                f"(status {status}, headers {headers})"
            )
        status, _, body = self.stack.get("/", port=fixed_port)
        if status != 200:
            raise StackError(f"the fixed-response Nginx answered {status}: {body[:200]!r}")
        self._record_stack(stage, started, {"fixed_port": fixed_port})

    def scale(self, stage: Stage, replicas: int) -> None:
        assert self.stack is not None
        self.stack.up(replicas=replicas)
        ws_service = "ws" if self.stack.containers("ws") else "app"
        serving = self.stack.containers(ws_service)
        if len(serving) != replicas:
            raise StackError(f"{replicas} replicas wanted, {ws_service} runs {serving}")
        if stage.profile is not None:
            self.check_profile(stage.profile)
        self.check_image(stage)
        record = self.stack_record(stage)
        if record is not None:
            record["chat_replicas"] = {"service": ws_service, "containers": serving}

    def check_image(self, stage: Stage) -> None:
        """`make up` rebuilds the image: if the checkout changed meanwhile, say so (figures of two builds)."""
        assert self.stack is not None
        record = self.stack_record(stage)
        now = machine.image_of(self.stack)
        if record is not None and record.get("image") != now:
            self.error(
                stage.name,
                "image",
                f"the app image changed during the stage ({record.get('image')} -> {now})",
            )

    def stack_record(self, stage: Stage) -> dict[str, Any] | None:
        profile = stage.profile.name if stage.profile else None
        for record in reversed(self.results["stacks"]):
            if record["target"] == stage.target and record["profile"] == profile:
                return record
        return None

    def down(self) -> None:
        stack, self.stack = self.stack, None
        if stack is None:
            return
        forced = stack.down()
        if forced:
            self.error(stack.server, "down", f"removed by force after make clean: {', '.join(forced)}")

    # --- measured runs ------------------------------------------------------------------------

    def host(self, port: int | None) -> str:
        assert self.stack is not None
        return f"http://127.0.0.1:{port or self.stack.port}"

    def warmup_http(self, run_dir: Path, port: int | None, endpoints: tuple[str, ...]) -> None:
        c = self.config
        run = LocustRun(
            "http", self.host(port), c.http.users, spawn_rate(c.http.users, self.workers), c.warmup,
            run_dir / "locust", self.workers, ("--http-endpoints", ",".join(endpoints)),
        )  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        procs.run(
            run.command(sys.executable),
            timeout=run.timeout,
            log=run_dir / "locust.log",
            env=inherited_environment(),
        )

    def warmup_echo(self, run_dir: Path) -> None:
        c = self.config
        run = LocustRun(
            "echo", self.host(None), c.echo.users, spawn_rate(c.echo.users, self.workers), c.warmup,
            run_dir / "locust", self.workers, scenario_options([("--echo-interval", c.echo.interval)]),
        )  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        procs.run(
            run.command(sys.executable),
            timeout=run.timeout,
            log=run_dir / "locust.log",
            env=inherited_environment(),
        )

    def _profile(self, stage: Stage) -> str:
        return stage.profile.name if stage.profile else ""

    def http_run(
        self,
        stage: Stage,
        stage_dir: Path,
        endpoint: str,
        k: int,
        target: str | None = None,
        port: int | None = None,
        kind: str = "variant",
    ) -> None:
        c = self.config
        path = names.HTTP_ENDPOINTS[endpoint]
        users = c.http.users
        rate = spawn_rate(users, self.workers)
        target = target or stage.target
        run_dir = stage_dir / f"http-{slug(target)}-{endpoint}-locust-{k}"
        run = LocustRun(
            "http",
            self.host(port),
            users,
            rate,
            c.http.duration + users / rate,
            run_dir / "locust",
            self.workers,
            ("--http-endpoints", endpoint),
            reset_stats=True,
        )
        measurement = self.measurement(target, self._profile(stage), "http", path, "locust", path, kind)
        self.add_run(measurement, self.run_locust(run_dir, run, path), stage)

    def wrk_run(
        self,
        stage: Stage,
        stage_dir: Path,
        endpoint: str,
        k: int,
        target: str | None = None,
        port: int | None = None,
        kind: str = "variant",
    ) -> None:
        c = self.config
        path = names.HTTP_ENDPOINTS[endpoint]
        target = target or stage.target
        run_dir = stage_dir / f"http-{slug(target)}-{endpoint}-wrk-{k}"
        run = WrkRun(f"{self.host(port)}{path}", c.wrk.connections, c.wrk.threads, c.wrk.duration)
        measurement = self.measurement(target, self._profile(stage), "http", path, "wrk", path, kind)
        self.add_run(measurement, self.run_wrk(run_dir, run, path), stage)

    def echo_run(
        self, stage: Stage, stage_dir: Path, k: int, target: str | None = None, kind: str = "variant"
    ) -> None:
        c = self.config
        users = c.echo.users
        rate = spawn_rate(users, self.workers)
        target = target or stage.target
        run_dir = stage_dir / f"echo-{slug(target)}-{k}"
        run = LocustRun(
            "echo",
            self.host(None),
            users,
            rate,
            c.echo.duration + users / rate,
            run_dir / "locust",
            self.workers,
            scenario_options([("--echo-interval", c.echo.interval)]),
        )
        measurement = self.measurement(
            target, self._profile(stage), "echo", names.ECHO_PATH, "locust", names.ECHO_ROUND_TRIP, kind
        )
        self.add_run(measurement, self.run_locust(run_dir, run, names.ECHO_ROUND_TRIP), stage)

    def capacity_seconds(self) -> float:
        cap = self.config.capacity
        return cap.sockets / cap.spawn_rate + cap.settle + CAPACITY_MARGIN

    def capacity_run(self, stage: Stage, stage_dir: Path, k: int) -> None:
        c = self.config
        assert self.stack is not None
        run_dir = stage_dir / f"capacity-{k}"
        memory_file = run_dir / "memory.json"
        run = LocustRun(
            "capacity", self.host(None), c.capacity.sockets, c.capacity.spawn_rate, self.capacity_seconds(),
            run_dir / "locust", self.workers,
            scenario_options([
                ("--capacity-path", c.capacity.path),
                ("--capacity-memory-containers", memory_pattern(self.stack.project)),
                ("--capacity-settle", c.capacity.settle),
                ("--capacity-report", str(memory_file)),
            ]),
            full_history=True,
        )  # fmt: skip
        row = names.ws_connect(c.capacity.path)
        measurement = self.measurement(
            stage.target, self._profile(stage), "capacity", f"{c.capacity.sockets} sockets", "locust", row
        )
        record = self.run_locust(run_dir, run, row)
        if memory_file.exists():
            record["memory"] = json.loads(memory_file.read_text())
        elif "error" not in record:
            record["error"] = f"no memory report (see {record['dir']}/locust.log)"
        self.add_run(measurement, record, stage)

    def chat_seconds(self) -> float:
        chat = self.config.chat
        return chat.users / spawn_rate(chat.users, self.workers) + chat.settle + chat.duration

    def chat_run(self, stage: Stage, stage_dir: Path, rooms: int, k: int) -> None:
        c = self.config
        run_dir = stage_dir / f"chat-{rooms}-rooms-{k}"
        rate = spawn_rate(c.chat.users, self.workers)
        run = LocustRun(
            "chat", self.host(None), c.chat.users, rate, self.chat_seconds(), run_dir / "locust",
            self.workers,
            scenario_options([
                ("--chat-rooms", rooms), ("--chat-interval", c.chat.interval), ("--chat-room", f"bench-{k}"),
                ("--chat-settle", c.chat.settle),
            ]),
        )  # fmt: skip
        case = f"{c.chat.users} users, {rooms} room" + ("s" if rooms > 1 else "")
        measurement = self.measurement(
            stage.target, self._profile(stage), "chat", case, "locust", names.CHAT_DELIVERY
        )
        self.add_run(measurement, self.run_locust(run_dir, run, names.CHAT_DELIVERY), stage)

    # --- the whole run ------------------------------------------------------------------------

    def run(self) -> int:
        stages = self.stages()
        planned = sum(step.planned for stage in stages for step in [*stage.steps, stage.teardown] if step)
        progress = Progress(sum(len(stage.steps) + 1 for stage in stages), planned)
        print(
            f"bench: {len(stages)} stage(s), about {math.ceil(planned / 60)} min planned; "
            f"results in {self.out}",
            flush=True,
        )
        status = "complete"
        try:
            with procs.interruptible():
                for stage in stages:
                    self.run_stage(stage, progress)
        except procs.Interrupted as exc:
            status = "interrupted"
            print(f"\nbench: {exc}; taking the stack down", file=sys.stderr, flush=True)
        finally:
            with procs.shielded():
                try:
                    self.down()
                except StackError as exc:
                    self.error("bench", "down", str(exc))
                self.results["status"] = status
                self.results["finished_at"] = utc_now()
                self.save()
                self.render()
        if status == "interrupted":
            return 128 + (procs.last_signal() or 2)
        return 1 if self.results["errors"] else 0

    def run_stage(self, stage: Stage, progress: Progress) -> None:
        """Run a stage; if its stack fails (no `make up`, or it stops answering), run the whole stage
        once more from scratch, so that a long bench does not lose a variant to one transient Docker
        failure. The first attempt's figures are dropped; the retry is noted in the report."""
        for attempt in range(1, STAGE_ATTEMPTS + 1):
            errors_before = len(self.results["errors"])
            failure = self.attempt_stage(stage, progress)
            if failure is None:
                return
            if attempt == STAGE_ATTEMPTS:
                self.error(
                    stage.name, "stage", f"{failure}; skipped the rest of this stage (attempt {attempt})"
                )
                self.save()
                return
            lost = [e["message"].splitlines()[0] for e in self.results["errors"][errors_before:]]
            del self.results["errors"][errors_before:]
            self.results["notes"].append(
                f"{stage.name}: {failure.splitlines()[0]}; the stage was run again from scratch"
                + (f" (errors of the first attempt: {'; '.join(lost)})" if lost else "")
            )
            print(
                f"    {stage.name}: {failure.splitlines()[0]}; running the stage again",
                file=sys.stderr,
                flush=True,
            )
            self.forget(stage)
            progress.extend(
                len(stage.steps) + 1, sum(step.planned for step in [*stage.steps, stage.teardown] if step)
            )

    def attempt_stage(self, stage: Stage, progress: Progress) -> str | None:
        """The stage's steps, then its teardown; returns why its stack failed, or None."""
        steps = iter(stage.steps)
        failure = None
        try:
            for step in steps:
                progress.begin(f"{stage.name} · {step.label}", step.planned)
                try:
                    step.action()
                finally:
                    progress.end()
        except (StackError, StageAborted) as exc:
            failure = str(exc)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            # A fault of the bench itself, not of the stack: running it again would not help.
            self.error(
                stage.name, "stage", f"unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            )
        finally:
            for step in steps:
                progress.skip(step.planned)
            with procs.shielded():
                if stage.teardown is not None:
                    progress.begin(f"{stage.name} · {stage.teardown.label}", stage.teardown.planned)
                    try:
                        stage.teardown.action()
                    except StackError as exc:
                        self.error(stage.name, "down", str(exc))
                    progress.end()
                self.save()
        return failure

    def forget(self, stage: Stage) -> None:
        """Drop what a failed attempt of ``stage`` recorded."""
        kind, profile = stage.kind, self._profile(stage)

        def belongs(record: dict[str, Any]) -> bool:
            if kind == "ceiling":
                return record.get("kind") == "ceiling"
            return record.get("target") == stage.target and (record.get("profile") or "") == profile

        self.results["measurements"] = [m for m in self.results["measurements"] if not belongs(m)]
        self.measurements = {key: m for key, m in self.measurements.items() if not belongs(m)}
        self.results["stacks"] = [s for s in self.results["stacks"] if not belongs(s)]

    def render(self) -> None:
        if not any(m["runs"] for m in self.results["measurements"]):
            print("bench: nothing was measured; no report", file=sys.stderr)
            return
        written = report.render(self.out)
        print("bench: report " + ", ".join(str(path) for path in written), flush=True)


def new_output_dir(base: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path
