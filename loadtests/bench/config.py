"""What the bench runs: variants, app profiles, scenarios, repeats, durations and user counts.

Every setting comes from the command line or the environment (``BENCH_*``, see ``.env.example``)
and is checked here, so a bad value stops the bench before any container starts, with a message
naming the setting and what it accepts. Fine-grained values are ``SECTION.FIELD=VALUE`` overrides
(``--set http.users=32``, or ``BENCH_SET="http.users=32 chat.rooms=1,5"``).
"""

import argparse
import dataclasses
import math
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.fanout.generator import SENDER_RATE
from loadtests.lib import names
from loadtests.lib.settings import MIN_SEND_INTERVAL
from loadtests.sockets.plan import DEFAULT_RATE, DEFAULT_SETTLE, DEFAULT_STEPS, PlanError, parse_steps
from stackctl import variants

ROOT = Path(__file__).resolve().parents[2]

# Scenario names as BENCH_SCENARIOS takes them, in the order a stage runs them. `wrk` measures the
# HTTP endpoints again with wrk, whose own ceiling is far above Locust's.
# `fanout` steps the chat's message rate up to the highest deliveries/s with p99 within a threshold.
# `sockets` steps idle chat sockets up until a step fails, in a stack of its own (a larger Nginx).
SCENARIOS = ("http", "wrk", "echo", "capacity", "chat", "fanout", "sockets", "soak")
# What runs unless BENCH_SCENARIOS names more: the soak takes half an hour per variant, the
# fan-out throughput up to three minutes per variant (up to a minute per run, three runs), and the
# sockets to the limit several minutes per variant and a stack of their own, which would take the
# three-run bench past its hour; each runs only when named (BENCH_SCENARIOS=fanout).
ON_REQUEST = ("fanout", "sockets", "soak")
# nginx/entrypoint.sh's smallest NGINX_WORKER_CONNECTIONS (tests/bench/test_sockets.py ties the two).
NGINX_MIN_CONNECTIONS = 512
DEFAULT_SCENARIOS = tuple(name for name in SCENARIOS if name not in ON_REQUEST)
DEFAULT_PROJECT = "rtd-bench"
DEFAULT_OUTPUT = ROOT / "results"
# A result at or above this share of the generator's ceiling is marked as limited by the generator.
GENERATOR_THRESHOLD = 0.8

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # what compose accepts as a project name
# A memory limit as compose takes it: bytes, or a number with b, k, m or g (NGINX_MEMORY_LIMIT).
_MEMORY = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.IGNORECASE)
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
# The variant is the stage's SERVER: a profile must not swap it behind the report's back.
RESERVED_PROFILE_VARS = frozenset({"SERVER"})
# Profile variables that shape the stack rather than the app's environment: as for `make up`, the
# bench lays the matching compose file over the stack (REDIS_SHARDED=1: compose.redis-sharded.yaml).
STACK_PROFILE_VARS = frozenset({"REDIS_SHARDED"})


class ConfigError(ValueError):
    """A setting the bench cannot run with; the message names it."""


def parse_seconds(text: str, setting: str) -> float:
    """``"20"``, ``"20s"``, ``"2m"``, ``"1m30s"``, ``"1h"`` → seconds (> 0)."""
    raw = str(text).strip().lower()
    match = _DURATION.match(raw)
    if not raw or not match or not any(match.groups()):
        raise ConfigError(f"{setting} must be a duration such as 20, 20s, 2m or 1m30s, got {text!r}")
    hours, minutes, seconds = (float(group) if group else 0.0 for group in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"{setting} must be longer than 0 s, got {text!r}")
    return total


def _split_list(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def select_servers(spec: str, known: Sequence[str]) -> tuple[str, ...]:
    """``""`` or ``all`` → every variant; else the named ones, in the order given."""
    wanted = _split_list(spec)
    if not wanted or wanted == ["all"]:
        return tuple(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(f"unknown server {', '.join(unknown)}; valid: {' '.join(known)}")
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"a server is named twice in {spec!r}")
    return tuple(wanted)


def select_scenarios(spec: str) -> tuple[str, ...]:
    """``""`` → the default ones (every scenario but the soak); ``all`` → every scenario; else the
    named ones, run in the bench's own order."""
    wanted = _split_list(spec)
    if not wanted:
        return DEFAULT_SCENARIOS
    if wanted == ["all"]:
        return SCENARIOS
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise ConfigError(f"unknown scenario {', '.join(unknown)}; valid: {' '.join(SCENARIOS)}")
    return tuple(name for name in SCENARIOS if name in wanted)


@dataclass(frozen=True)
class Profile:
    """A named set of environment variables given to the app containers (``app`` and ``ws``), and
    the stack's own variables among them (STACK_PROFILE_VARS)."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def app_env(self) -> dict[str, str]:
        return {key: value for key, value in self.env.items() if key not in STACK_PROFILE_VARS}

    @property
    def redis_sharded(self) -> bool:
        return self.env.get("REDIS_SHARDED") == "1"


DEFAULT_PROFILE = Profile("default", {})


def parse_profiles(spec: str) -> tuple[Profile, ...]:
    """``"stock:ASGI_FAST_PATH=0 fast:ASGI_FAST_PATH=1,WEB_CONCURRENCY=2"`` → profiles.

    Profiles are separated by whitespace, variables by commas, so a value holds neither.
    ``NAME`` alone (or ``NAME:``) is a profile with no extra variables. Empty: one ``default``.
    """
    tokens = spec.split()
    if not tokens:
        return (DEFAULT_PROFILE,)
    profiles: list[Profile] = []
    for token in tokens:
        name, _, assignments = token.partition(":")
        if not _PROFILE_NAME.match(name):
            raise ConfigError(
                f"profile name {name!r} in {token!r}: 1-32 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (format NAME:VAR=value,VAR=value)"
            )
        if any(profile.name == name for profile in profiles):
            raise ConfigError(f"profile {name!r} is defined twice")
        env: dict[str, str] = {}
        for assignment in filter(None, assignments.split(",")):
            key, sep, value = assignment.partition("=")
            if not sep or not _ENV_NAME.match(key):
                raise ConfigError(f"profile {name!r}: {assignment!r} is not VAR=value")
            if key in RESERVED_PROFILE_VARS:
                raise ConfigError(
                    f"profile {name!r}: {key} is chosen by the bench (the variant), not a profile"
                )
            if key in env:
                raise ConfigError(f"profile {name!r}: {key} is set twice")
            if key in STACK_PROFILE_VARS and value not in ("0", "1"):
                raise ConfigError(f"profile {name!r}: {key} must be 0 or 1, got {value!r}")
            env[key] = value
        profiles.append(Profile(name, env))
    return tuple(profiles)


# --- Per-scenario settings ---------------------------------------------------------------------------
# Durations are seconds of one measured run; users are Locust users (one socket each for WebSockets).


# Durations are as short as the report's warm-up check allows (report.warmup_section: the first run
# of each figure against the later ones), so that three runs of everything fit in an hour on 2 cores.
@dataclass(frozen=True)
class HttpSettings:
    users: int = 64  # closed loop, no think time: enough to keep every server process busy
    duration: float = 10.0
    endpoints: tuple[str, ...] = names.APP_ENDPOINTS  # each measured alone


@dataclass(frozen=True)
class WrkSettings:
    connections: int = 64  # the same concurrency as http.users
    threads: int = 0  # 0: one per CPU core
    duration: float = 5.0


@dataclass(frozen=True)
class EchoSettings:
    users: int = 300  # x 1/interval = the offered message rate, above what 2 cores answer
    interval: float = 0.1
    duration: float = 10.0


@dataclass(frozen=True)
class ChatSettings:
    users: int = 1000  # members; one sender per room, the rest listen
    rooms: tuple[int, ...] = (1, 10)  # one case per entry: all users in 1 room, then spread over 10
    interval: float = 1.0  # seconds between two messages of a room's sender
    duration: float = 15.0  # 15 messages per room: 15,000 deliveries per run with 1,000 members
    replicas: int = 2  # app containers, so that every room spans replicas (through Redis)
    settle: float = 2.0  # seconds from the last user's start to the first message (rooms full)


@dataclass(frozen=True)
class FanoutSettings:
    rooms: int = 4  # rooms spread deliveries over both replicas and every server process
    members: int = 50  # per room: each message is delivered 50 times
    start: float = 20.0  # messages/s of the first step, over all rooms (1,000 deliveries/s)
    factor: float = 1.5  # each step's rate over the previous one's
    max_rate: float = 400.0  # messages/s of the last step at most (20,000 deliveries/s)
    warmup: float = 5.0  # seconds at the first step's rate before the first step (a fresh stack)
    settle: float = 2.0  # seconds at a step's rate before it is measured
    duration: float = 4.0  # measured seconds of each step
    p99_ms: float = 100.0  # a step holds while its delivery p99 stays within this
    replicas: int = 2  # app containers, so that every room spans replicas (through Redis)


@dataclass(frozen=True)
class SocketsSettings:
    """Idle chat sockets stepped up until a step fails (loadtests/sockets), in a stack whose Nginx
    can hold them: a process may hold 20,000 open files on this host, so a worker at most ~9,700
    WebSockets (each takes two connections, client and app), and Nginx needs about 28 KB a socket."""

    # The tool's own defaults (loadtests/sockets/plan.py says why 200 handshakes a second).
    steps: tuple[int, ...] = DEFAULT_STEPS  # socket counts, rising
    rate: float = DEFAULT_RATE  # handshakes per second
    settle: float = DEFAULT_SETTLE  # seconds after a step's last handshake before it is measured
    replicas: int = 2  # app containers: every broadcast crosses the channel layer
    nginx_workers: int = 4  # NGINX_WORKER_PROCESSES of the stage's stack
    nginx_connections: int = 19000  # NGINX_WORKER_CONNECTIONS: 19,512 open files, under the 20,000
    nginx_memory: str = "1g"  # NGINX_MEMORY_LIMIT of the stage's stack


@dataclass(frozen=True)
class CapacitySettings:
    sockets: int = 2000
    spawn_rate: float = 200.0  # handshakes per second while ramping
    settle: float = 5.0  # seconds after the last socket opened before memory is measured
    path: str = names.ECHO_PATH


@dataclass(frozen=True)
class SoakSettings:
    minutes: float = 30.0  # of churn; the first 5 are its warm-up (loadtests/soak/run.py)
    users: int = 100  # churning users, plus 2 on the HTTP endpoints
    replicas: int = 2  # rooms span replicas: every broadcast crosses the channel layer
    interval: float = 5.0  # seconds between two samples of the stack


@dataclass(frozen=True)
class Sections:
    http: HttpSettings = HttpSettings()
    wrk: WrkSettings = WrkSettings()
    echo: EchoSettings = EchoSettings()
    chat: ChatSettings = ChatSettings()
    fanout: FanoutSettings = FanoutSettings()
    capacity: CapacitySettings = CapacitySettings()
    sockets: SocketsSettings = SocketsSettings()
    soak: SoakSettings = SoakSettings()


FULL = Sections()
# BENCH_QUICK=1: every scenario, tiny, to check the whole pipeline on a machine in minutes.
QUICK = Sections(
    http=HttpSettings(users=8, duration=2.0),
    wrk=WrkSettings(connections=8, duration=1.0),
    echo=EchoSettings(users=8, duration=2.0),
    chat=ChatSettings(users=12, rooms=(1, 3), duration=3.0, settle=0.5),
    fanout=FanoutSettings(
        rooms=2, members=5, start=10.0, factor=2.0, max_rate=20.0, warmup=0.5, settle=0.5, duration=2.0
    ),
    capacity=CapacitySettings(sockets=40, spawn_rate=40.0, settle=1.0),
    sockets=SocketsSettings(steps=(20, 50), rate=50.0, settle=1.0),  # only when BENCH_SCENARIOS names it
    soak=SoakSettings(minutes=1.0, users=20),  # only when BENCH_SCENARIOS names it
)


@dataclass(frozen=True)
class BenchConfig:
    servers: tuple[str, ...]
    profiles: tuple[Profile, ...]
    scenarios: tuple[str, ...]
    repeats: int
    warmup: float  # seconds of unrecorded load on each stack before its first measured run
    quick: bool
    ceiling: bool  # measure the generator's ceiling first
    interleave: bool  # HTTP on every variant at once, round by round (else in each variant's stage)
    locust_processes: int  # -1: one worker per CPU core; 0: a single process; N: N workers
    web_concurrency: int  # server processes per app container, the same for every variant
    project: str
    output: Path
    sections: Sections
    threshold: float = GENERATOR_THRESHOLD

    @property
    def http(self) -> HttpSettings:
        return self.sections.http

    @property
    def wrk(self) -> WrkSettings:
        return self.sections.wrk

    @property
    def echo(self) -> EchoSettings:
        return self.sections.echo

    @property
    def chat(self) -> ChatSettings:
        return self.sections.chat

    @property
    def fanout(self) -> FanoutSettings:
        return self.sections.fanout

    @property
    def capacity(self) -> CapacitySettings:
        return self.sections.capacity

    @property
    def sockets(self) -> SocketsSettings:
        return self.sections.sockets

    @property
    def soak(self) -> SoakSettings:
        return self.sections.soak

    def runs(self, scenario: str) -> bool:
        return scenario in self.scenarios


def _convert(raw: str, kind: Any, setting: str) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return parse_seconds(raw, setting) if setting.endswith(".duration") else float(raw)
        if kind is str:
            return raw
        if typing.get_origin(kind) is tuple:
            item_type = typing.get_args(kind)[0]
            return tuple(item_type(item) for item in _split_list(raw))
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: {raw!r} is not a valid {getattr(kind, '__name__', kind)}: {exc}"
        ) from None
    raise ConfigError(f"{setting} cannot be set")  # pragma: no cover - every field type is handled above


def apply_overrides(sections: Sections, assignments: Sequence[str]) -> Sections:
    """``["http.users=32", "chat.rooms=1,5"]`` applied to the scenario settings."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        section_name, dot, field_name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {assignment!r} is not SECTION.FIELD=VALUE (e.g. http.users=32)")
        section = getattr(sections, section_name, None)
        if section is None:
            valid = ", ".join(f.name for f in dataclasses.fields(Sections))
            raise ConfigError(f"override {assignment!r}: no section {section_name!r}; sections: {valid}")
        hints = typing.get_type_hints(type(section))
        if field_name not in hints:
            raise ConfigError(
                f"override {assignment!r}: {section_name} has no {field_name!r}; fields: {', '.join(hints)}"
            )
        value = _convert(raw.strip(), hints[field_name], key.strip())
        sections = dataclasses.replace(
            sections, **{section_name: dataclasses.replace(section, **{field_name: value})}
        )
    return sections


def _at_least(value: float, minimum: float, setting: str) -> None:
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(f"{setting} must be >= {minimum:g}, got {value!r}")


def validate(config: BenchConfig) -> BenchConfig:
    s = config.sections
    _at_least(config.repeats, 1, "repeats (BENCH_REPEATS)")
    _at_least(config.warmup, 0, "warm-up (BENCH_WARMUP)")
    _at_least(config.web_concurrency, 1, "WEB_CONCURRENCY")
    _at_least(config.locust_processes, -1, "Locust processes (BENCH_LOCUST_PROCESSES)")
    if not 0 < config.threshold <= 1:
        raise ConfigError(f"the generator threshold must be in (0, 1], got {config.threshold!r}")
    if not _PROJECT_NAME.match(config.project):
        raise ConfigError(f"project {config.project!r}: lower-case letters, digits, '-' and '_' only")
    for name, value in (
        ("http.users", s.http.users),
        ("wrk.connections", s.wrk.connections),
        ("echo.users", s.echo.users),
        ("chat.users", s.chat.users),
        ("chat.replicas", s.chat.replicas),
        ("capacity.sockets", s.capacity.sockets),
        ("soak.users", s.soak.users),
        ("soak.replicas", s.soak.replicas),
    ):
        _at_least(value, 1, name)
    _at_least(s.wrk.threads, 0, "wrk.threads")
    for name, value in (
        ("http.duration", s.http.duration),
        ("wrk.duration", s.wrk.duration),
        ("echo.duration", s.echo.duration),
        ("chat.duration", s.chat.duration),
        ("capacity.spawn_rate", s.capacity.spawn_rate),
        ("soak.minutes", s.soak.minutes),
        ("soak.interval", s.soak.interval),
    ):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")
    _at_least(s.capacity.settle, 0, "capacity.settle")
    _at_least(s.chat.settle, 0, "chat.settle")
    _at_least(s.echo.interval, MIN_SEND_INTERVAL, "echo.interval (the app rate-limits faster senders)")
    _at_least(s.chat.interval, MIN_SEND_INTERVAL, "chat.interval (the app rate-limits faster senders)")
    if not s.http.endpoints:
        raise ConfigError("http.endpoints is empty")
    unknown = [e for e in s.http.endpoints if e not in names.HTTP_ENDPOINTS]
    if unknown:
        raise ConfigError(
            f"http.endpoints: unknown {', '.join(unknown)}; valid: {', '.join(names.HTTP_ENDPOINTS)}"
        )
    if not s.chat.rooms or min(s.chat.rooms) < 1:
        raise ConfigError(f"chat.rooms must be room counts >= 1, got {s.chat.rooms!r}")
    if max(s.chat.rooms) >= s.chat.users:
        raise ConfigError(
            f"chat.users ({s.chat.users}) must exceed every room count {s.chat.rooms} (listeners)"
        )
    _validate_fanout(s.fanout)
    _validate_sockets(s.sockets)
    if not s.capacity.path.startswith("/ws/"):
        raise ConfigError(f"capacity.path must be a WebSocket path under /ws/, got {s.capacity.path!r}")
    return config


def _validate_fanout(fanout: FanoutSettings) -> None:
    for name, value in (("fanout.rooms", fanout.rooms), ("fanout.members", fanout.members)):
        _at_least(value, 1, name)
    _at_least(fanout.replicas, 1, "fanout.replicas")
    _at_least(fanout.settle, 0, "fanout.settle")
    _at_least(fanout.warmup, 0, "fanout.warmup")
    for name, value in (
        ("fanout.start", fanout.start),
        ("fanout.max_rate", fanout.max_rate),
        ("fanout.duration", fanout.duration),
        ("fanout.p99_ms", fanout.p99_ms),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be > 0, got {value!r}")
    if not (fanout.factor > 1 and math.isfinite(fanout.factor)):
        raise ConfigError(
            f"fanout.factor must be > 1 (each step's rate over the last), got {fanout.factor!r}"
        )
    if fanout.max_rate < fanout.start:
        raise ConfigError(f"fanout.max_rate ({fanout.max_rate:g}) must be >= fanout.start ({fanout.start:g})")
    senders = fanout.rooms * fanout.members
    if fanout.max_rate > senders * SENDER_RATE:
        raise ConfigError(
            f"fanout.max_rate ({fanout.max_rate:g} messages/s) needs more than the {senders} members "
            f"(fanout.rooms x fanout.members) sending {SENDER_RATE:g}/s each, below the app's rate limit"
        )


def _validate_sockets(sockets: SocketsSettings) -> None:
    try:  # the tool's own rule, so that the bench refuses what the tool would
        parse_steps(",".join(map(str, sockets.steps)))
    except PlanError:
        raise ConfigError(
            f"sockets.steps must be socket counts rising from at least 1, got {sockets.steps!r}"
        ) from None
    if not (sockets.rate > 0 and math.isfinite(sockets.rate)):
        raise ConfigError(f"sockets.rate must be > 0 handshakes per second, got {sockets.rate!r}")
    if not (sockets.settle >= 0 and math.isfinite(sockets.settle)):
        raise ConfigError(f"sockets.settle must be >= 0 seconds, got {sockets.settle!r}")
    _at_least(sockets.replicas, 1, "sockets.replicas")
    _at_least(sockets.nginx_workers, 1, "sockets.nginx_workers")
    _at_least(sockets.nginx_connections, NGINX_MIN_CONNECTIONS, "sockets.nginx_connections")
    if not _MEMORY.match(sockets.nginx_memory):
        raise ConfigError(
            f"sockets.nginx_memory must be a memory limit such as 1g or 768m, got {sockets.nginx_memory!r}"
        )


def _flag(value: str | None, setting: str) -> bool:
    text = (value or "0").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{setting} must be 0 or 1, got {value!r}")


def _int(value: str, setting: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{setting} must be a whole number, got {value!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description="Every server variant side by side: the generator's ceiling first, then for each "
        "variant and app profile: up, warm-up, measured runs, down. Each option also reads the "
        "environment variable named in its help.",
    )
    p.add_argument("--servers", help="variants, space/comma-separated (BENCH_SERVERS; default: all)")
    p.add_argument(
        "--scenarios",
        help=f"of {' '.join(SCENARIOS)} or all (BENCH_SCENARIOS; default: {' '.join(DEFAULT_SCENARIOS)})",
    )
    p.add_argument("--profiles", help="NAME:VAR=value,... space-separated (BENCH_PROFILES; default: one)")
    p.add_argument("--repeats", help="measured runs per measurement (BENCH_REPEATS; default 3)")
    p.add_argument("--duration", help="seconds of each http/echo/chat run (BENCH_DURATION)")
    p.add_argument("--warmup", help="seconds of warm-up load per stack (BENCH_WARMUP; default 10, quick 2)")
    p.add_argument("--quick", action="store_true", default=None, help="tiny runs (BENCH_QUICK=1)")
    p.add_argument(
        "--no-ceiling", action="store_true", default=None, help="skip the ceiling (BENCH_CEILING=0)"
    )
    p.add_argument(
        "--no-interleave",
        action="store_true",
        default=None,
        help="HTTP in each variant's own stage, not every stack up at once (BENCH_INTERLEAVE=0)",
    )
    p.add_argument(
        "--processes", help="Locust workers: -1 one per core, 0 one process (BENCH_LOCUST_PROCESSES)"
    )
    p.add_argument(
        "--web-concurrency", help="server processes per app container (WEB_CONCURRENCY; default: cores)"
    )
    p.add_argument("--project", help=f"compose project (BENCH_PROJECT; default {DEFAULT_PROJECT})")
    p.add_argument("--output", help="folder for results/<timestamp>/ (BENCH_OUTPUT; default results)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="e.g. http.users=32 (BENCH_SET)",
    )
    return p


def load(
    argv: Sequence[str], environ: Mapping[str, str] = os.environ, known_servers: Sequence[str] | None = None
) -> BenchConfig:
    """The configuration from ``argv`` and the environment; raises ConfigError on a bad value."""
    args = parser().parse_args(argv)

    def pick(option: Any, variable: str, default: str = "") -> str:
        return str(option) if option is not None else environ.get(variable, default)

    quick = bool(args.quick) or _flag(environ.get("BENCH_QUICK"), "BENCH_QUICK")
    sections = QUICK if quick else FULL
    duration = pick(args.duration, "BENCH_DURATION")
    if duration.strip():
        seconds = parse_seconds(duration, "BENCH_DURATION")
        sections = dataclasses.replace(
            sections,
            http=dataclasses.replace(sections.http, duration=seconds),
            echo=dataclasses.replace(sections.echo, duration=seconds),
            chat=dataclasses.replace(sections.chat, duration=seconds),
        )
    soak_minutes = environ.get("SOAK_MINUTES", "").strip()  # the same variable as make loadtest's
    if soak_minutes:
        sections = apply_overrides(sections, [f"soak.minutes={soak_minutes}"])
    sections = apply_overrides(sections, [*environ.get("BENCH_SET", "").split(), *args.set])
    cores = os.cpu_count() or 1
    warmup = pick(args.warmup, "BENCH_WARMUP")
    config = BenchConfig(
        servers=select_servers(pick(args.servers, "BENCH_SERVERS"), known_servers or variants()),
        profiles=parse_profiles(pick(args.profiles, "BENCH_PROFILES")),
        scenarios=select_scenarios(pick(args.scenarios, "BENCH_SCENARIOS")),
        repeats=_int(pick(args.repeats, "BENCH_REPEATS", "3"), "BENCH_REPEATS"),
        warmup=(2.0 if quick else 10.0) if not warmup.strip() else _warmup(warmup),
        quick=quick,
        ceiling=not (bool(args.no_ceiling) or not _flag(environ.get("BENCH_CEILING", "1"), "BENCH_CEILING")),
        interleave=not (
            bool(args.no_interleave) or not _flag(environ.get("BENCH_INTERLEAVE", "1"), "BENCH_INTERLEAVE")
        ),
        locust_processes=_int(
            pick(args.processes, "BENCH_LOCUST_PROCESSES", "0" if quick else "-1"), "BENCH_LOCUST_PROCESSES"
        ),
        web_concurrency=_int(
            pick(args.web_concurrency, "WEB_CONCURRENCY", str(cores)) or str(cores), "WEB_CONCURRENCY"
        ),
        project=pick(args.project, "BENCH_PROJECT", DEFAULT_PROJECT),
        output=Path(pick(args.output, "BENCH_OUTPUT") or DEFAULT_OUTPUT),
        sections=sections,
    )
    return validate(config)


def _warmup(text: str) -> float:
    if text.strip() == "0":
        return 0.0
    return parse_seconds(text, "BENCH_WARMUP")


def locust_workers(processes: int) -> int:
    """Worker processes Locust starts for ``--processes`` (``-1``: one per core); 0 = none."""
    return (os.cpu_count() or 1) if processes == -1 else processes


def locust_mode(processes: int) -> str:
    """How the report describes the load generator."""
    workers = locust_workers(processes)
    if workers == 0:
        return "a single Locust process (no --processes)"
    per_core = " (one per core)" if processes == -1 else ""
    return f"Locust with --processes {processes}: a master and {workers} worker processes{per_core}"
