"""The bench: the generator's ceiling, then every variant under every app profile, side by side.

Stages, in order: the ceiling; the comparison, where every variant's stack is up at once and each
round measures every HTTP endpoint on every variant in turn (so that a drift of the machine over
the bench spreads over every variant alike, instead of favouring the variants measured first);
then one stage per variant for the WebSocket scenarios. BENCH_INTERLEAVE=0 measures HTTP in the
variant's own stage instead. With ``sockets`` named, each variant has one more stage, whose stack
runs a larger Nginx for the sockets to the limit. Each stage: up (``make up``), warm-up, the
measured runs (each repeated, rounds interleaved), down (``make clean``). A stage whose stack fails
runs once more from scratch. Every run's raw figures go into ``results.json`` as soon as
the stage ends; the report is rendered from that file alone (``loadtests.bench.report``).

What a run of each scenario is lives in ``scenarios``; running a tool, in ``tools``; the records, in
``results``. This module plans the stages and drives their stacks.
"""

import dataclasses
import datetime as dt
import math
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.bench import machine, procs, report, server_metrics, soak_stage, sockets, tools
from loadtests.bench.analysis import ASGI_HELLO, NGINX_FIXED, NGINX_STATIC
from loadtests.bench.config import BenchConfig, Profile, locust_mode, locust_workers
from loadtests.bench.progress import Progress
from loadtests.bench.results import BenchError, Measurement, Results, Run
from loadtests.bench.scenarios import (
    Capacity,
    Chat,
    Echo,
    Fanout,
    HttpLocust,
    HttpWrk,
    Job,
    Scenario,
    Sockets,
    Target,
    slug,
)
from loadtests.bench.stack import (
    LOAD_TEST_LIMITS,
    Stack,
    StackError,
    write_override,
)
from loadtests.bench.wrk import WrkRun
from loadtests.lib import names
from stackctl import free_port

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
COMPARISON = "comparison"  # the stage that measures HTTP on every variant at once
STAGE_ATTEMPTS = 2  # a stage whose stack fails is run once more from scratch


def _settings_from_environment() -> list[str]:
    return [
        f"{key}={shlex.quote(value)}"
        for key, value in sorted(os.environ.items())
        if key.startswith("BENCH_") or key == "WEB_CONCURRENCY"
    ]


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
    kind: str  # "ceiling", "comparison" or "variant"
    target: str
    profile: Profile | None
    steps: list[Step] = field(default_factory=list)
    teardown: Step | None = None
    # A scenario whose stack differs from the variant's (sockets: a larger Nginx) has a stage of its
    # own, named apart: a failed attempt of one stage must not drop the other's figures.
    part: str = ""

    @property
    def name(self) -> str:
        name = self.target if self.profile is None else f"{self.target} · {self.profile.name}"
        return f"{name} · {self.part}" if self.part else name

    @property
    def profile_name(self) -> str:
        return self.profile.name if self.profile else ""

    @property
    def folder(self) -> str:
        if self.kind != "variant":
            return self.kind
        return slug("-".join(filter(None, (self.target, self.profile_name, self.part))))


class Bench:
    def __init__(self, config: BenchConfig, out_dir: Path, argv: list[str]) -> None:
        self.config = config
        self.out = out_dir
        self.workers = locust_workers(config.locust_processes)
        self.stack: Stack | None = None  # the stack the next run goes to
        self.stacks: dict[Target, Stack] = {}  # every stack of the stage, taken down at its end
        self.without_metrics: set[str] = set()  # projects whose app runs no exporter (METRICS=0)
        self.results = Results(
            started_at=utc_now(),
            # The command that produced the results, with the settings it took from the environment.
            command=[*_settings_from_environment(), "python", "-m", "loadtests.bench", *argv],
            machine=machine.machine(),
            host_versions=machine.host_versions(),
            settings=self._settings(),
        )
        self.http = HttpLocust(config, self.workers)
        self.wrk = HttpWrk(config, self.workers)
        self.echo = Echo(config, self.workers)
        self.capacity = Capacity(config, self.workers)
        self.chat = Chat(config, self.workers)
        self.fanout = Fanout(config, self.workers)
        self.sockets = Sockets(config, self.workers)

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
            "interleave": c.interleave,
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

    def error(self, stage: str, step: str, message: str) -> None:
        self.results.errors.append(BenchError(stage, step, message))
        print(f"    ERROR in {stage} / {step}: {message}", file=sys.stderr, flush=True)

    def save(self) -> Path:
        return self.results.save(self.out)

    # --- measured runs ------------------------------------------------------------------------

    def host(self, port: int | None) -> str:
        assert self.stack is not None
        return f"http://127.0.0.1:{port or self.stack.port}"

    def measure(self, stage: Stage, job: Job) -> None:
        """Run one job, add its run to its measurement; abort the stage if the stack died."""
        run_dir = self.out / "runs" / stage.folder / job.folder
        if stage.kind == COMPARISON:  # every variant's runs in one stage: a folder each
            run_dir = self.out / "runs" / stage.folder / slug(self.label(job.target)) / job.folder
        before = self.server_snapshot(stage, job.target, after_run=False)
        run = tools.run_tool(
            job.command(self.host(job.target.port), run_dir), job.row, run_dir, self.out, utc_now()
        )
        if job.finish is not None:
            job.finish(run, run_dir)
        if before is not None and run.error is None:
            after = self.server_snapshot(stage, job.target, after_run=True)
            if after is not None:
                try:
                    run.server = server_metrics.difference(before, after)
                except server_metrics.CounterResetError as exc:
                    self.error(stage.name, f"{job.label}: server metrics", str(exc))
        measurement = self.results.measurement(
            job.target.name, job.target.profile, job.scenario, job.case, job.tool, job.row, job.target.kind,
            stage.name,
        )  # fmt: skip
        self.add_run(measurement, run, stage)

    def server_snapshot(
        self, stage: Stage, target: Target, *, after_run: bool
    ) -> server_metrics.Snapshot | None:
        """The app containers' /metrics (unless they run without the exporter) and CPU accounts summed,
        for a run that goes through the app (a variant, or the raw ASGI hello-world); None for the
        others. A variant whose metrics cannot be read is an error of the stack (its figures are
        still kept)."""
        if self.stack is None or (target.kind != "variant" and target.name != ASGI_HELLO):
            return None
        stack = self.stack
        try:
            containers = [c for service in stack.app_services for c in stack.containers(service)]
            with_metrics = stack.project not in self.without_metrics

            def scrapes() -> list[str]:
                return [stack.metrics(c) for c in containers] if with_metrics else []

            # A scrape runs a process in the container, which its CPU account counts: read the
            # account after the scrapes before a run and before them after it, so neither is in it.
            if after_run:
                cpu = [stack.cpu_seconds(c) for c in containers]
                return server_metrics.snapshot(scrapes(), cpu)
            texts = scrapes()
            return server_metrics.snapshot(texts, [stack.cpu_seconds(c) for c in containers])
        except (StackError, ValueError) as exc:
            if target.kind == "variant":
                self.error(stage.name, "server metrics", str(exc).splitlines()[0])
            return None

    def add_run(self, measurement: Measurement, run: Run, stage: Stage) -> None:
        measurement.add(run)
        if run.error is not None:
            self.error(
                stage.name, f"{measurement.scenario} {measurement.case} ({measurement.tool})", run.error
            )
        main = (run.rows or {}).get(measurement.row, {})
        mostly_failed = main.get("failures", 0) > main.get("requests", 0) / 2
        if (run.error is not None or mostly_failed) and self.stack is not None and not self.stack.healthy():
            # The rest of the stage would only measure a dead stack.
            raise StageAborted(f"the stack stopped answering on {self.stack.url}/healthz")

    def steps_of(self, stage: Stage, jobs: list[Job]) -> list[Step]:
        return [Step(job.label, job.planned, lambda job=job: self.measure(stage, job)) for job in jobs]

    def warm_up_step(
        self, stage: Stage, name: str, scenario: HttpLocust | Echo, port: int | None = None
    ) -> Step:
        run_dir = self.out / "runs" / stage.folder / f"warmup-{name}"
        return Step(
            f"warm-up {name}",
            scenario.locust_planned(self.config.warmup),
            lambda: tools.warm_up(scenario.warm_up(self.host(port), run_dir), run_dir),
        )

    # --- stages -------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        c = self.config
        stages = []
        if c.ceiling and set(c.scenarios) & {"http", "wrk", "echo", "fanout"}:
            stages.append(self.ceiling_stage())
        if c.interleave and (c.runs("http") or c.runs("wrk")):
            stages.append(self.comparison_stage())
        variants = [(server, profile) for server in c.servers for profile in c.profiles]
        for server, profile in variants:
            stage = self.variant_stage(server, profile)
            if len(stage.steps) > 1:  # more than its `up`: a scenario of its own to measure
                stages.append(stage)
        if c.runs("sockets"):
            # Round by round, as the HTTP rounds: a drift of the machine spreads over every variant.
            rounds = range(1, c.repeats + 1)
            stages += [self.sockets_stage(server, profile, k) for k in rounds for server, profile in variants]
        return stages

    def ceiling_stage(self) -> Stage:
        c = self.config
        stage = Stage("ceiling", "ceiling", None)
        fixed_port = free_port()
        stage.steps.append(
            Step(
                "up (Nginx fixed response, ASGI hello-world)",
                PLAN_UP,
                lambda: self.ceiling_up(stage, fixed_port),
            )
        )
        # The static file is served by Nginx alone, the same in every variant's stack: measured here, once.
        targets = [
            (Target(NGINX_FIXED, "ceiling", fixed_port), "ping"),
            (Target(ASGI_HELLO, "ceiling"), "ping"),
            (Target(NGINX_STATIC, "ceiling"), "static"),
        ]
        http = {target: HttpLocust(c, self.workers, (endpoint,)) for target, endpoint in targets}
        wrk = {target: HttpWrk(c, self.workers, (endpoint,)) for target, endpoint in targets}
        if c.warmup > 0:
            stage.steps += [self.warm_up_step(stage, t.name, http[t], t.port) for t, _ in targets]
        for k in range(1, c.repeats + 1):
            for target, _ in targets:
                for scenario in (http[target], wrk[target]):
                    if c.runs(scenario.name):
                        stage.steps += self.steps_of(stage, scenario.jobs(target, k))
            for scenario in (self.echo, self.fanout):  # the raw ASGI echo, and its chat broadcaster
                if c.runs(scenario.name):
                    stage.steps += self.steps_of(stage, scenario.jobs(Target(ASGI_HELLO, "ceiling"), k))
        stage.teardown = Step("down", PLAN_DOWN, self.down)
        return stage

    def comparison_stage(self) -> Stage:
        """HTTP with Locust and wrk on every variant and profile, every stack up at once: round by
        round, each endpoint on each variant in turn."""
        c = self.config
        stage = Stage(COMPARISON, COMPARISON, None)
        targets = [Target(server, profile=profile.name) for server in c.servers for profile in c.profiles]
        profiles = {profile.name: profile for profile in c.profiles}
        stage.steps.append(
            Step(
                f"up ({len(targets)} stacks)",
                PLAN_UP * len(targets),
                lambda: [self.variant_up(stage, target, profiles[target.profile]) for target in targets],
            )
        )
        if c.warmup > 0:
            for target in targets:
                warm_up = self.warm_up_step(stage, f"http-{self.label(target)}", self.http)
                stage.steps.append(self.on_stack_of(target, warm_up))
        for k in range(1, c.repeats + 1):
            for target in targets:
                for scenario in (self.http, self.wrk):
                    if c.runs(scenario.name):
                        steps = self.steps_of(stage, scenario.jobs(target, k))
                        stage.steps += [self.on_stack_of(target, step) for step in steps]
        stage.teardown = Step("down", PLAN_DOWN * len(targets), self.down)
        return stage

    def label(self, target: Target) -> str:
        """A variant's name in progress lines and folders, with its profile when there are several."""
        return target.name if len(self.config.profiles) == 1 else f"{target.name}-{target.profile}"

    def on_stack_of(self, target: Target, step: Step) -> Step:
        """``step`` run against ``target``'s stack (the comparison stage has them all up)."""

        def action() -> None:
            self.stack = self.stacks[target]
            step.action()

        return Step(f"{self.label(target)} · {step.label}", step.planned, action)

    def variant_stage(self, server: str, profile: Profile) -> Stage:
        c = self.config
        stage = Stage("variant", server, profile)
        target = Target(server, profile=profile.name)
        http_here = not c.interleave and (c.runs("http") or c.runs("wrk"))
        stage.steps.append(Step("up", PLAN_UP, lambda: self.variant_up(stage, target, profile)))
        if c.warmup > 0:
            if http_here:
                stage.steps.append(self.warm_up_step(stage, "http", self.http))
            if set(c.scenarios) & {"echo", "chat", "fanout", "capacity"}:
                stage.steps.append(self.warm_up_step(stage, "echo", self.echo))
        scenarios: list[Scenario] = [*([self.http, self.wrk] if http_here else []), self.echo, self.capacity]
        for scenario in scenarios:
            if c.runs(scenario.name):
                stage.steps += self.steps_of(stage, scenario.rounds(target))
        if c.runs("chat"):
            stage.steps.append(
                Step(
                    f"scale to {c.chat.replicas} replicas",
                    PLAN_SCALE,
                    lambda: self.scale(stage, c.chat.replicas),
                )
            )
            stage.steps += self.steps_of(stage, self.chat.rounds(target))
        if c.runs("fanout"):
            if not (c.runs("chat") and c.chat.replicas == c.fanout.replicas):
                stage.steps.append(
                    Step(
                        f"scale to {c.fanout.replicas} replicas",
                        PLAN_SCALE,
                        lambda: self.scale(stage, c.fanout.replicas),
                    )
                )
            stage.steps += self.steps_of(stage, self.fanout.rounds(target))
        if c.runs("soak"):  # only when named: half an hour per variant (loadtests/bench/soak_stage.py)
            stage.steps.append(
                Step(
                    f"scale to {c.soak.replicas} replicas",
                    PLAN_SCALE,
                    lambda: self.scale(stage, c.soak.replicas),
                )
            )
            stage.steps.append(
                Step(
                    f"soak {c.soak.minutes:g} min",
                    soak_stage.planned(c),
                    lambda: soak_stage.run_soak(self, stage),
                )
            )
        stage.teardown = Step("down", PLAN_DOWN, self.down)
        return stage

    def sockets_stage(self, server: str, profile: Profile, k: int) -> Stage:
        """Run ``k`` of the sockets to the limit, in a stack of its own: its Nginx has the workers and
        memory the sockets need (``sockets.nginx_environment``), which the other scenarios' stacks do
        not. A stack per run: a run that reached the limit leaves processes that keep the memory it
        grew, or were killed at their memory limit, so the next run in them would measure neither
        the memory per socket nor the limit of a fresh stack. No warm-up, for the same reason. No
        ceiling either: nothing bounds a count of idle sockets from the generator's side but its own
        limits, which it names when it meets them."""
        c = self.config
        stage = Stage("variant", server, profile, part=f"sockets {k}" if c.repeats > 1 else "sockets")
        target = Target(server, profile=profile.name)
        nginx = sockets.nginx_environment(c.sockets)
        stage.steps += [
            Step(
                f"up (Nginx: {c.sockets.nginx_workers} workers of {c.sockets.nginx_connections:,} "
                f"connections, {c.sockets.nginx_memory})",
                PLAN_UP,
                lambda: self.variant_up(stage, target, profile, nginx),
            ),
            Step(
                f"scale to {c.sockets.replicas} replicas",
                PLAN_SCALE,
                lambda: self.scale(stage, c.sockets.replicas),
            ),
            *self.steps_of(stage, self.sockets.jobs(target, k)),
        ]
        stage.teardown = Step("down", PLAN_DOWN, self.down)
        return stage

    # --- stage actions ------------------------------------------------------------------------

    def _stack_env(self) -> dict[str, str]:
        return {"WEB_CONCURRENCY": str(self.config.web_concurrency)}

    def stack_folder(self, stage: Stage, target: Target | None = None) -> Path:
        """Where a stack's logs, compose configuration and profile override go."""
        folder = self.out / "stacks" / slug(stage.name)
        return folder / slug(self.label(target)) if stage.kind == COMPARISON and target else folder

    def _record_stack(
        self, stage: Stage, target: Target | None, started: float, extra: dict[str, Any] | None = None
    ) -> None:
        stack = self.stack
        assert stack is not None
        config_file = self.stack_folder(stage, target) / "compose-config.yaml"
        try:
            config_file.write_text(stack.compose_config())
            config_path: str | None = str(config_file.relative_to(self.out))
        except StackError as exc:
            self.error(stage.name, "compose config", str(exc))
            config_path = None
        services = {
            service: stack.containers(service, names=True)
            for service in ("nginx", "app", "ws", "redis", "postgres", "fixed")  # fixed: the ceiling's
        }
        # What each server process runs with, read from the process itself (the report's settings).
        profile = self.profile_of(target)
        profile_names = profile.env if profile else {}
        servers = {
            service: machine.server_settings(stack, services[service][0], profile_names)
            for service in ("app", "ws")
            if services[service]
        }
        for service, found in servers.items():
            if "error" in found:
                self.error(stage.name, f"{service} server settings", found["error"])
        self.results.stacks.append(
            {
                "stage": stage.name,
                "kind": "ceiling" if stage.kind == "ceiling" else "variant",
                "target": target.name if target else stage.target,
                "profile": target.profile if target else None,
                "server": stack.server,
                "project": stack.project,
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
        if not self.results.stack_versions:
            self.results.stack_versions = machine.stack_versions(stack)

    def profile_of(self, target: Target | None) -> Profile | None:
        return next((p for p in self.config.profiles if target and p.name == target.profile), None)

    def _new_stack(
        self,
        target: Target,
        folder: Path,
        compose_files: list[Path],
        env: dict[str, str],
        project: str,
        redis_sharded: bool = False,
    ) -> Stack:
        """A stack brought up next (its `up` is the caller's), and taken down with the stage."""
        folder.mkdir(parents=True, exist_ok=True)
        self.stack = self.stacks[target] = Stack(
            server=target.name if target.kind == "variant" else CEILING_SERVER,
            project=project,
            http_port=free_port(),
            logs=folder,
            compose_files=compose_files,
            env={**self._stack_env(), **env},
            redis_sharded=redis_sharded,
        )
        return self.stack

    def variant_up(
        self, stage: Stage, target: Target, profile: Profile, stack_env: dict[str, str] | None = None
    ) -> None:
        """``stack_env``: compose variables of this stage's stack alone (the sockets' Nginx)."""
        folder = self.stack_folder(stage, target)
        app_env = profile.app_env
        files = [write_override(folder / "profile.compose.yaml", app_env)] if app_env else []
        # The comparison's stacks are up side by side: each its own compose project.
        project = stack_project(self.config.project, self.label(target)) if stage.kind == COMPARISON else None
        stack = self._new_stack(
            target,
            folder,
            files,
            dict(stack_env or {}),
            project or self.config.project,
            redis_sharded=profile.redis_sharded,
        )
        started = time.monotonic()
        stack.up(replicas=1)
        self.check_profile(profile)
        if stack.serves_metrics():
            self.without_metrics.discard(stack.project)
        else:
            self.without_metrics.add(stack.project)
        extra: dict[str, Any] = {"profile_env": dict(profile.env)}
        if stack_env:
            extra["stack_env"] = dict(stack_env)
        self._record_stack(stage, target, started, extra)

    def check_profile(self, profile: Profile) -> None:
        """Every app container runs with the profile's variables, on the layer it chose (else its
        figures would lie)."""
        assert self.stack is not None
        for service in ("app", "ws"):
            for container in self.stack.containers(service, names=True):
                env = self.stack.container_env(container)
                wrong = {k: env.get(k) for k, v in profile.app_env.items() if env.get(k) != v}
                if wrong:
                    raise StackError(f"{container} lacks profile {profile.name!r}'s {wrong}")
                shards = len(env.get("REDIS_URL", "").split(","))
                if shards != (2 if profile.redis_sharded else 1):
                    raise StackError(f"{container}: REDIS_URL lists {shards} Redis, unlike {profile.name!r}")

    def ceiling_up(self, stage: Stage, fixed_port: int) -> None:
        env = {"BENCH_FIXED_PORT": str(fixed_port)}
        target = Target(ASGI_HELLO, "ceiling")
        self._new_stack(target, self.stack_folder(stage), [CEILING_COMPOSE], env, self.config.project)
        assert self.stack is not None
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
        self._record_stack(stage, None, started, {"fixed_port": fixed_port})

    def scale(self, stage: Stage, replicas: int) -> None:
        assert self.stack is not None
        self.stack.up(replicas=replicas)
        ws_service = self.stack.ws_service
        serving = self.stack.containers(ws_service, names=True)
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
        return next((record for record in self.results.stacks if record.get("stage") == stage.name), None)

    def down(self) -> None:
        """Every stack of the stage down; one that fails does not keep the others up."""
        stacks, self.stacks, self.stack = list(self.stacks.values()), {}, None
        failures = []
        for stack in stacks:
            try:
                forced = stack.clean()
            except StackError as exc:
                failures.append(f"{stack.project}: {exc}")
                continue
            if forced:
                self.error(stack.server, "down", f"removed by force after make clean: {', '.join(forced)}")
        if failures:
            raise StackError("\n".join(failures))

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
                self.results.status = status
                self.results.finished_at = utc_now()
                self.save()
                self.render()
        if status == "interrupted":
            return 128 + (procs.last_signal() or 2)
        return 1 if self.results.errors else 0

    def run_stage(self, stage: Stage, progress: Progress) -> None:
        """Run a stage; if its stack fails (no `make up`, or it stops answering), run the whole stage
        once more from scratch, so that a long bench does not lose a variant to one transient Docker
        failure. The first attempt's figures are dropped; the retry is noted in the report."""
        for attempt in range(1, STAGE_ATTEMPTS + 1):
            errors_before = len(self.results.errors)
            failure = self.attempt_stage(stage, progress)
            if failure is None:
                return
            if attempt == STAGE_ATTEMPTS:
                self.error(
                    stage.name, "stage", f"{failure}; skipped the rest of this stage (attempt {attempt})"
                )
                self.save()
                return
            lost = [e.message.splitlines()[0] for e in self.results.errors[errors_before:]]
            del self.results.errors[errors_before:]
            self.results.notes.append(
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
        self.results.forget(stage.name)

    def render(self) -> None:
        if not any(m.runs for m in self.results.measurements) and not self.results.soaks:
            print("bench: nothing was measured; no report", file=sys.stderr)
            return
        written = report.render(self.out)
        print("bench: report " + ", ".join(str(path) for path in written), flush=True)


def stack_project(project: str, label: str) -> str:
    """The compose project of a variant's stack in the comparison stage, beside the others."""
    return f"{project}-{slug(label)}"


def new_output_dir(base: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path
