"""``report.md`` and ``report.html`` rendered from ``results.json`` alone, with the PNG charts.

The figures are computed here from the raw runs (``analysis``), formatted once (the ``fmt_*``
functions), and laid out as plain tables that both templates print as they are: the two reports
cannot disagree, and every figure in them is a measured one.

    python -m loadtests.bench report results/<timestamp>      # render again, e.g. after an edit
"""

import datetime as dt
import math
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from loadtests.bench import charts, verdicts
from loadtests.bench.analysis import ASGI_HELLO, NGINX_FIXED, NGINX_STATIC, Figures, analyse
from loadtests.bench.progress import format_duration
from loadtests.bench.results import Results
from loadtests.bench.stats import Spread
from loadtests.lib import names

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORTS = ("report.md", "report.html")
LIMITED_MARK = "†"


# --- Formatting: one function per kind of figure ------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_ms(value: float) -> str:
    if value == int(value):  # Locust's percentiles are whole milliseconds: show no false decimals
        return f"{value:,.0f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_cpu_ms(value: float) -> str:
    """CPU milliseconds per request: tenths of a millisecond matter, whole ones are the exception."""
    return f"{value:.2f}"


def fmt_kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def fmt_share(value: float) -> str:
    return f"{value * 100:.0f} %"


def fmt_spread(value: Spread, fmt: Callable[[float], str]) -> str:
    """``median (min to max)``; one run is its value alone."""
    low, high = fmt(value.low), fmt(value.high)
    if value.count == 1 or low == high:
        return fmt(value.median)
    return f"{fmt(value.median)} ({low} to {high})"


def fmt_errors(failures: int, requests: int) -> str:
    rate = failures / requests if requests else 0.0
    return f"{rate * 100:.2f} % ({failures:,} of {requests:,})"


def latency_cells(figures: Figures) -> list[str]:
    return [fmt_spread(figures.p50, fmt_ms), fmt_spread(figures.p95, fmt_ms), fmt_spread(figures.p99, fmt_ms)]


def fmt_rps(figures: Figures) -> str:
    text = fmt_spread(figures.rps, fmt_rate)
    return f"{text} {LIMITED_MARK}" if figures.limited else text


# --- Layout ---------------------------------------------------------------------------------------


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[tuple[str, str]] = field(default_factory=list)  # (file, caption)
    items: list[str] = field(default_factory=list)


class Index:
    """Figures by (target, profile, scenario, case, tool), and the variants in the order run."""

    def __init__(self, figures: Sequence[Figures], results: Results) -> None:
        self.figures = list(figures)
        self.by_key = {(f.target, f.profile, f.scenario, f.case, f.tool): f for f in figures}
        settings = results.settings
        profiles = [p["name"] for p in settings.get("profiles", [])] or ["default"]
        measured = {(f.target, f.profile) for f in figures if f.kind == "variant"}
        self.variants = [(s, p) for s in settings.get("servers", []) for p in profiles if (s, p) in measured]
        self.profiles = profiles

    def get(
        self, target: str, profile: str, scenario: str, case: str, tool: str = "locust"
    ) -> Figures | None:
        return self.by_key.get((target, profile, scenario, case, tool))

    def cases(self, scenario: str, tool: str = "locust", kind: str = "variant") -> list[str]:
        found: list[str] = []
        for f in self.figures:
            if f.scenario == scenario and f.tool == tool and f.kind == kind and f.case not in found:
                found.append(f.case)
        return found

    def label(self, target: str, profile: str) -> str:
        return target if len(self.profiles) == 1 else f"{target} · {profile}"


@dataclass(frozen=True)
class ShareColumns:
    """A table's "of ceiling" and "of ASGI hello-world" columns: there when a row has the figure."""

    ceiling: bool
    hello: bool

    @classmethod
    def of(cls, figures: Iterable[Figures], *, hello: bool = True) -> "ShareColumns":
        figures = list(figures)
        return cls(
            ceiling=any(f.ceiling is not None for f in figures),
            hello=hello and any(f.hello_share is not None for f in figures),
        )

    @property
    def headings(self) -> list[str]:
        return ["of ceiling"] * self.ceiling + ["of ASGI hello-world"] * self.hello

    def cells(self, f: Figures) -> list[str]:
        cells = []
        if self.ceiling:
            cells.append(fmt_share(f.ceiling_share) if f.ceiling_share is not None else "no ceiling")
        if self.hello:
            cells.append(fmt_share(f.hello_share) if f.hello_share is not None else "served by Nginx")
        return cells


def http_tables(index: Index, tool: str) -> list[Table]:
    tables = []
    for case in index.cases("http", tool):
        rows_of = [(index.label(t, p), index.get(t, p, "http", case, tool)) for t, p in index.variants]
        present = [(label, f) for label, f in rows_of if f is not None]
        if not present:
            continue
        shares = ShareColumns.of((f for _, f in present), hello=case != names.HTTP_ENDPOINTS["static"])
        columns = ["variant", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors", *shares.headings]
        rows = [
            [label, fmt_rps(f), *latency_cells(f), fmt_errors(f.failures, f.requests), *shares.cells(f)]
            for label, f in present
        ]
        tables.append(Table(columns, rows, title=f"GET {case}"))
    return tables


CEILING_WHAT = {"echo": "WebSocket echo", "fanout": "chat fan-out, deliveries/s (p99 bound)"}


def ceiling_section(index: Index, threshold: float) -> Section | None:
    ceiling = [f for f in index.figures if f.kind == "ceiling"]
    if not ceiling:
        return None
    described = {
        NGINX_FIXED: "Nginx answering by itself (no app)",
        ASGI_HELLO: "raw ASGI hello-world behind the stack's Nginx",
        NGINX_STATIC: "the stack's Nginx serving a static file (the same in every variant's stack)",
    }
    rows = [
        [
            described.get(f.target, f.target),
            f.tool,
            CEILING_WHAT.get(f.scenario, f"GET {f.case}"),
            fmt_spread(f.rps, fmt_rate),
            *latency_cells(f),
            fmt_errors(f.failures, f.requests),
        ]
        for f in ceiling
    ]
    return Section(
        "The load generator's ceiling",
        paragraphs=[
            "Measured first, on this machine, with the same tools and settings as the variants. Any "
            f"throughput at or above {threshold * 100:.0f} % of the same tool's ceiling is marked "
            f"{LIMITED_MARK}: that figure says more about the load generator than about the server. For "
            "HTTP the ceiling is Nginx answering by itself; for the WebSocket echo it is the raw ASGI echo; "
            "for the fan-out throughput, the raw ASGI chat broadcaster (fan-out within each process).",
        ],
        tables=[
            Table(
                [
                    "target",
                    "tool",
                    "what",
                    "requests/s or messages/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "errors",
                ],
                rows,
            )
        ],
    )


def echo_table(index: Index) -> Table | None:
    present = [(index.label(t, p), index.get(t, p, "echo", names.ECHO_PATH)) for t, p in index.variants]
    present = [(label, f) for label, f in present if f is not None]
    if not present:
        return None
    shares = ShareColumns.of(f for _, f in present)
    columns = ["variant", "messages/s", "round trip p50 ms", "p95 ms", "p99 ms", "errors", "other failures"]
    rows = [
        [
            label,
            fmt_rps(f),
            *latency_cells(f),
            fmt_errors(f.failures, f.requests),
            fmt_count(f.other_failures),
            *shares.cells(f),
        ]
        for label, f in present
    ]
    columns += shares.headings
    return Table(columns, rows)


def chat_tables(index: Index) -> list[Table]:
    tables = []
    for case in index.cases("chat"):
        present = [(index.label(t, p), index.get(t, p, "chat", case)) for t, p in index.variants]
        present = [(label, f) for label, f in present if f is not None]
        if not present:
            continue
        has_ack = all("ack_p50" in f.extra for _, f in present)
        columns = ["variant", "deliveries/s", "delivery p50 ms", "p95 ms", "p99 ms"]
        columns += ["ack p50 ms", "ack p99 ms"] if has_ack else []
        columns += ["errors", "other failures"]
        rows = []
        for label, f in present:
            ack = (
                [fmt_spread(f.extra["ack_p50"], fmt_ms), fmt_spread(f.extra["ack_p99"], fmt_ms)]
                if has_ack
                else []
            )
            errors = [fmt_errors(f.failures, f.requests), fmt_count(f.other_failures)]
            rows.append([label, fmt_spread(f.rps, fmt_rate), *latency_cells(f), *ack, *errors])
        tables.append(Table(columns, rows, title=case))
    return tables


def _has_server_side(f: Figures) -> bool:
    return "cpu_ms_per_request" in f.extra or "container_cpu_ms_per_request" in f.extra


def _extra_cell(f: Figures, key: str, fmt: Callable[[float], str] = fmt_ms) -> str:
    return fmt_spread(f.extra[key], fmt) if key in f.extra else "n/a"


def server_side_section(index: Index) -> Section | None:
    """The client's latency beside Django's own (the app's /metrics over the same runs), and the CPU
    the server's processes spent per request, message or delivery."""

    def row(label: str, what: str, f: Figures, server: str) -> list[str]:
        """The client's p50 and p99 beside the server's own (``server``: the extra's prefix), and CPU."""
        return [
            label,
            what,
            f.tool,
            fmt_spread(f.p50, fmt_ms),
            _extra_cell(f, f"{server}_p50"),
            fmt_spread(f.p99, fmt_ms),
            _extra_cell(f, f"{server}_p99"),
            _extra_cell(f, "cpu_ms_per_request", fmt_cpu_ms),
            _extra_cell(f, "container_cpu_ms_per_request", fmt_cpu_ms),
        ]

    http_rows, ws_rows = [], []
    for tool in ("locust", "wrk"):
        for case in index.cases("http", tool):
            for t, p in index.variants:
                f = index.get(t, p, "http", case, tool)
                if f is not None and _has_server_side(f):
                    http_rows.append(row(index.label(t, p), f"GET {case}", f, "server"))
    for f in index.figures:
        if f.target == ASGI_HELLO and _has_server_side(f):  # no Django in it: CPU only
            what = "WebSocket echo" if f.scenario == "echo" else f"GET {f.case}"
            (http_rows if f.scenario == "http" else ws_rows).append(
                row("raw ASGI hello-world", what, f, "none")
            )
    for scenario in ("echo", "chat"):
        for case in index.cases(scenario):
            for t, p in index.variants:
                f = index.get(t, p, scenario, case)
                if f is not None and _has_server_side(f):
                    what = "WebSocket echo" if scenario == "echo" else f"chat, {case}"
                    ws_rows.append(row(index.label(t, p), what, f, "server_fanout"))
    if not http_rows and not ws_rows:
        return None
    tables = []
    if http_rows:
        columns = ["variant", "what", "tool", "client p50 ms", "Django p50 ms", "client p99 ms"]
        columns += ["Django p99 ms", "server CPU ms per request", "container CPU ms per request"]
        tables.append(Table(columns, http_rows, title="HTTP"))
    if ws_rows:
        columns = ["variant", "what", "tool", "client p50 ms", "app fan-out p50 ms", "client p99 ms"]
        columns += ["app fan-out p99 ms", "server CPU ms per message", "container CPU ms per message"]
        tables.append(Table(columns, ws_rows, title="WebSockets"))
    return Section(
        "The server's side",
        paragraphs=[
            "The app's own /metrics, read from every app container before and after each run: "
            "Django's time is from its first middleware to the response (without Nginx, the server's "
            "parsing, or the wait for a worker), a quantile interpolated within the histogram's "
            "buckets as Prometheus does, so as coarse as they are (1, 2.5, 5, 10, 25 ms ...). The app's "
            "fan-out time runs from a room broadcast to each socket's send. CPU is the server "
            "processes' (workers and supervisors) over the run, divided by the requests, messages or "
            "deliveries the client completed: Nginx, Redis and PostgreSQL are not in it. The "
            "container's is the app containers' own CPU account (their cgroups: the server, the metrics "
            "exporter and the health checks), which needs no exporter: an app profile with METRICS=0 "
            "has it too. What the client sees beyond Django's time is the server, Nginx, the network "
            "and the queue.",
        ],
        tables=tables,
    )


def capacity_table(index: Index) -> Table | None:
    rows = []
    for case in index.cases("capacity"):
        for t, p in index.variants:
            f = index.get(t, p, "capacity", case)
            if f is None:
                continue
            sockets = f.extra.get("sockets")
            per_socket = f.extra.get("bytes_per_socket")
            rows.append(
                [
                    index.label(t, p),
                    case,
                    fmt_spread(sockets, fmt_count) if sockets else "not measured",
                    fmt_spread(f.extra["handshake_rate"], fmt_rate)
                    if "handshake_rate" in f.extra
                    else "not measured",
                    fmt_spread(f.p95, fmt_ms),
                    fmt_errors(f.failures, f.requests),
                    fmt_count(f.other_failures),
                    fmt_spread(per_socket, fmt_kib) if per_socket else "not measured",
                ]
            )
    if not rows:
        return None
    columns = [
        "variant",
        "target",
        "sockets held",
        "handshakes/s while ramping",
        "handshake p95 ms",
        "refused",
        "dropped",
    ]
    columns.append("memory per socket")
    return Table(columns, rows)


def headline_table(index: Index) -> Table | None:
    """One line per variant: the figure that matters most from each scenario."""
    columns: list[str] = ["variant"]
    getters: list[Callable[[str, str], str | None]] = []

    def add(title: str, getter: Callable[[str, str], str | None]) -> None:
        if any(getter(t, p) is not None for t, p in index.variants):
            columns.append(title)
            getters.append(getter)

    for case in index.cases("http", "locust"):
        add(f"{case} req/s", lambda t, p, c=case: _cell(index.get(t, p, "http", c), fmt_rps))
    for case in index.cases("http", "wrk")[:1]:
        add(f"{case} req/s (wrk)", lambda t, p, c=case: _cell(index.get(t, p, "http", c, "wrk"), fmt_rps))
    add("echo msg/s", lambda t, p: _cell(index.get(t, p, "echo", names.ECHO_PATH), fmt_rps))
    for case in index.cases("chat")[:1]:
        add(
            f"fan-out p99 ms ({case})",
            lambda t, p, c=case: _cell(index.get(t, p, "chat", c), lambda f: fmt_spread(f.p99, fmt_ms)),
        )
    for case in index.cases("fanout", "fanout")[:1]:
        add(
            "fan-out deliveries/s (p99 bound)",
            lambda t, p, c=case: _cell(index.get(t, p, "fanout", c, "fanout"), fmt_rps),
        )
    for case in index.cases("sockets", "sockets")[:1]:
        add(
            "sockets held",
            lambda t, p, c=case: _cell(
                index.get(t, p, "sockets", c, "sockets"), lambda f: fmt_spread(f.rps, fmt_count)
            ),
        )
    for case in index.cases("capacity")[:1]:
        add(
            "memory per socket",
            lambda t, p, c=case: _cell(index.get(t, p, "capacity", c), lambda f: _bytes_per_socket(f)),
        )
    if len(columns) == 1:
        return None
    rows = [
        [index.label(t, p), *(getter(t, p) or "not run" for getter in getters)] for t, p in index.variants
    ]
    return Table(columns, rows)


def _runs(count: object) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def _cell(figures: Figures | None, fmt: Callable[[Figures], str | None]) -> str | None:
    return None if figures is None else fmt(figures)


def _bytes_per_socket(f: Figures) -> str | None:
    value = f.extra.get("bytes_per_socket")
    return fmt_spread(value, fmt_kib) if value else None


def profile_tables(index: Index) -> list[Table]:
    """Each variant's figures under every profile side by side, with the ratio to the first."""
    if len(index.profiles) < 2:
        return []
    first = index.profiles[0]
    metrics: list[tuple[str, str, str, str, Callable[[Figures], float]]] = [
        (f"{case} req/s ({tool})", "http", case, tool, lambda f: f.rps.median)
        for tool in ("locust", "wrk")
        for case in index.cases("http", tool)
    ]
    # The app containers' CPU per request: what a profile costs, blurred far less than req/s by a
    # busy machine.
    metrics += [
        (f"{case} container CPU ms per request ({tool})", "http", case, tool, _container_cpu)
        for tool in ("locust", "wrk")
        for case in index.cases("http", tool)
    ]
    metrics += [("echo msg/s", "echo", names.ECHO_PATH, "locust", lambda f: f.rps.median)]
    metrics += [
        (f"fan-out p99 ms ({c})", "chat", c, "locust", lambda f: f.p99.median) for c in index.cases("chat")
    ]
    columns = ["variant", "measure", *index.profiles, *(f"{p} / {first}" for p in index.profiles[1:])]
    rows = []
    for server in dict.fromkeys(t for t, _ in index.variants):
        for title, scenario, case, tool, value_of in metrics:
            found = [index.get(server, p, scenario, case, tool) for p in index.profiles]
            if any(f is None for f in found):
                continue
            values = [value_of(f) for f in found if f is not None]
            if any(math.isnan(v) for v in values):
                continue
            fmt = fmt_ms if scenario == "chat" else fmt_cpu_ms if "CPU" in title else fmt_rate
            ratios = [f"{v / values[0]:.2f}x" if values[0] else "first is 0" for v in values[1:]]
            rows.append([server, title, *(fmt(v) for v in values), *ratios])
    return [Table(columns, rows)] if rows else []


def _container_cpu(f: Figures) -> float:
    spread = f.extra.get("container_cpu_ms_per_request")
    return spread.median if spread is not None else math.nan


SERVICE_LABELS = {"app": "app", "ws": "ws (WebSocket sidecar)"}


def fmt_command(argv: list[str]) -> str:
    """A process's command line as a shell would take it, without the interpreter of a script
    (``python .../gunicorn ...`` is ``gunicorn ...``) or the folder of the program."""
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]
    return shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""


def server_settings_section(index: Index, results: Results) -> Section | None:
    """Each stage's server command line and start-file variables, as read from the running process."""
    rows = []
    for stack in results.stacks:
        if stack.get("kind") == "ceiling":
            label = f"{ASGI_HELLO} (ceiling)"
        else:
            label = index.label(stack["target"], stack.get("profile") or "default")
        for service, found in stack.get("servers", {}).items():
            if "error" in found:
                cells = [f"could not be read: {found['error'].splitlines()[0]}", ""]
            else:
                variables = " ".join(f"{k}={v}" for k, v in found.get("env", {}).items())
                cells = [fmt_command(found.get("argv", [])), variables]
            row = [label, SERVICE_LABELS.get(service, service), *cells]
            if row not in rows:  # a variant's stacks in the comparison and its own stage run the same
                rows.append(row)
    if not rows:
        return None
    return Section(
        "Server settings",
        paragraphs=[
            "What each server ran with, read from its own process in the first container of each stack "
            "once the stack was up: the command line, and the values of the variables its start file "
            "and deploy/servers/common.sh read (defaults resolved; variables left empty are omitted), "
            "with the app profile's."
        ],
        tables=[Table(["variant", "service", "command line", "start-file variables"], rows)],
    )


def key_values(pairs: Iterable[tuple[str, Any]]) -> Table:
    return Table(["", ""], [[str(k), str(v)] for k, v in pairs])


def settings_items(results: Results) -> list[str]:
    s = results.settings
    http, wrk, echo, chat, cap = (s.get(k, {}) for k in ("http", "wrk", "echo", "chat", "capacity"))
    profiles = "; ".join(
        f"{p['name']}: {' '.join(f'{k}={v}' for k, v in p['env'].items()) or 'no extra variables'}"
        for p in s.get("profiles", [])
    )
    limits = ", ".join(f"{k}={v}" for k, v in s.get("nginx_limits", {}).items())
    # Results from before the senders waited for full rooms have no "settle".
    chat_start = (
        f" from {chat['settle']} s after the last user started (rooms full)" if "settle" in chat else ""
    )
    return [
        f"Load generator: {s.get('locust_mode')}; wrk with {s.get('wrk_threads')} threads and "
        f"{wrk.get('connections')} connections, {wrk.get('duration')} s per run.",
        f"Every measurement: {_runs(s.get('repeats'))}, reported as median (min to max); the rounds of runs "
        f"are interleaved across endpoints. Warm-up: {s.get('warmup_s')} s of load on each stack first.",
        "HTTP, Locust and wrk: every variant's stack up at once, each round measuring every endpoint on "
        "every variant in turn, so that a drift of the machine during the bench spreads over every variant "
        "alike."
        if s.get("interleave")
        else "HTTP, Locust and wrk: in each variant's own stage, one stack at a time (BENCH_INTERLEAVE=0): "
        "a drift of the machine between stages shows in the ratios between variants.",
        f"HTTP: {http.get('users')} Locust users in a closed loop (no think time), "
        f"{http.get('duration')} s per run, each endpoint alone; statistics reset once every user "
        "has started.",
        f"WebSocket echo: {echo.get('users')} users, one message every {echo.get('interval')} s each, "
        f"{echo.get('duration')} s per run.",
        f"Chat fan-out: {chat.get('users')} users, rooms {chat.get('rooms')}, one sender per room "
        f"sending every {chat.get('interval')} s, {chat.get('duration')} s per run{chat_start}, "
        f"{chat.get('replicas')} app replicas so that every room spans replicas (delivery crosses Redis).",
        f"Capacity: {cap.get('sockets')} idle sockets on {cap.get('path')}, opened at "
        f"{cap.get('spawn_rate')}/s; memory (docker stats, app containers) measured "
        f"{cap.get('settle')} s after the last one opened; one run per stack (a second run in the same "
        "processes reuses the memory the first one grew, and measures almost none).",
        f"App containers: WEB_CONCURRENCY={s.get('web_concurrency')} server processes each, 1 replica "
        f"(chat: {chat.get('replicas')}). App profiles: {profiles}.",
        f"Nginx's per-address limits raised for the run (every user comes from one address): {limits}.",
        "Locust's percentiles are its histogram buckets (1 ms wide below 100 ms, 10 ms up to 1 s); "
        "wrk's are exact.",
    ]


def build_context(
    results: Results, figures: Sequence[Figures], chart_files: dict[str, str]
) -> dict[str, Any]:
    index = Index(figures, results)
    settings = results.settings
    threshold = float(settings.get("generator_threshold", 0.8))
    sections: list[Section] = []

    headline = headline_table(index)
    if headline is not None:
        sections.append(
            Section(
                "Headline",
                paragraphs=[
                    f"Medians of {_runs(settings.get('repeats'))}. {LIMITED_MARK} marks a figure within "
                    f"{threshold * 100:.0f} % of the load generator's own ceiling (limited by the generator, "
                    "not the server): compare those variants with wrk's figures.",
                ],
                tables=[headline],
            )
        )
    baseline = verdicts.baseline_tables(figures, results)
    if baseline:
        sections.append(
            Section(
                "ASGI against the WSGI baseline",
                paragraphs=[
                    "Each ASGI variant's median as a multiple of the WSGI variant's (same tool, same "
                    "profile): an async view against the WSGI server's sync one, the sync view on both, "
                    "the database endpoint on both, and Django's /api/ping against the raw ASGI "
                    "hello-world behind the same Nginx (what Django and the server cost).",
                ],
                tables=[Table(columns, rows, title=title) for title, columns, rows in baseline],
            )
        )
    ceiling = ceiling_section(index, threshold)
    if ceiling is not None:
        sections.append(ceiling)
    for tool, title in (("locust", "HTTP endpoints (Locust)"), ("wrk", "HTTP endpoints (wrk)")):
        tables = http_tables(index, tool)
        if tables:
            sections.append(
                Section(
                    title,
                    paragraphs=["Requests/s and latency per endpoint, median (min to max) of the runs."],
                    tables=tables,
                    charts=[
                        (chart_files[k], c)
                        for k, c in ((f"http-{tool}", "requests/s per endpoint"),)
                        if k in chart_files
                    ],
                )
            )
    profiles = profile_tables(index)
    if profiles:
        sections.append(
            Section(
                "App profiles side by side",
                paragraphs=["Medians per profile, and each profile's ratio to the first."],
                tables=profiles,
            )
        )
    echo = echo_table(index)
    if echo is not None:
        sections.append(
            Section(
                "WebSocket echo",
                paragraphs=["Messages answered per second, and the round trip from send to reply."],
                tables=[echo],
                charts=[(chart_files["echo"], "echo messages/s and round trip p99")]
                if "echo" in chart_files
                else [],
            )
        )
    chat = chat_tables(index)
    if chat:
        sections.append(
            Section(
                "Chat fan-out",
                paragraphs=[
                    "Delivery latency from a message's send to its receipt by every other member of the "
                    "room; the ack is the sender's own copy (stored in PostgreSQL, then broadcast)."
                ],
                tables=chat,
                charts=[(chart_files["chat"], "fan-out delivery p50 and p99")]
                if "chat" in chart_files
                else [],
            )
        )
    from loadtests.bench.fanout_report import fanout_section  # imports this module's Section and Table

    fanout = fanout_section(index, results, chart_files)
    if fanout is not None:
        sections.append(fanout)
    from loadtests.bench.sockets_report import sockets_section  # imports this module's Section and Table

    capacity_limit = sockets_section(index, results, chart_files)
    if capacity_limit is not None:
        sections.append(capacity_limit)
    capacity = capacity_table(index)
    if capacity is not None:
        sections.append(
            Section(
                "Connection capacity",
                paragraphs=[
                    "Idle WebSockets held open; memory per socket is the app containers' growth divided "
                    "by the sockets open (the ws sidecar's, for gunicorn)."
                ],
                tables=[capacity],
                charts=[(chart_files["capacity"], "memory per idle socket")]
                if "capacity" in chart_files
                else [],
            )
        )
    server_side = server_side_section(index)
    if server_side is not None:
        sections.append(server_side)
    from loadtests.bench.soak_report import soak_section  # imports this module's Section and Table

    soak = soak_section(results, chart_files)
    if soak is not None:
        sections.append(soak)
    server_settings = server_settings_section(index, results)
    if server_settings is not None:
        sections.append(server_settings)
    sections.append(Section("How it was measured", items=settings_items(results)))
    warmup = verdicts.warmup_table(results)
    if warmup is not None:
        sections.append(
            Section(
                "Warm-up check",
                paragraphs=[
                    f"Each stack had {settings.get('warmup_s')} s of unrecorded load before its first run, "
                    "and the runs of a stage are interleaved. Were the warm-up too short, the first run "
                    "of each figure would be slower than the later ones: below, the first run's "
                    "throughput against the median of the later runs of the same figure.",
                ],
                tables=[Table(*warmup)],
            )
        )
    sections.append(environment_section(results))
    notes = results.notes
    if notes:
        sections.append(Section("Notes", items=[note.splitlines()[0] for note in notes]))
    errors = results.errors
    if errors:
        sections.append(
            Section(
                "Errors",
                paragraphs=["Runs that produced no figures are left out of the tables above."],
                items=[f"{e.stage} / {e.step}: {e.message.splitlines()[0]}" for e in errors],
            )
        )
    return {
        "title": "Django + Channels on every server",
        "status": results.status,
        "started_at": results.started_at,
        "finished_at": results.finished_at,
        "wall": format_duration(_seconds_between(results.started_at, results.finished_at)),
        "command": " ".join(results.command),
        "quick": bool(settings.get("quick")),
        "sections": sections,
    }


def environment_section(results: Results) -> Section:
    m = results.machine
    machine_table = key_values(
        [
            ("CPU", m.get("cpu_model")),
            ("cores", f"{m.get('cpu_cores')} ({m.get('cpu_cores_usable')} usable)"),
            ("memory", f"{m.get('memory_bytes', 0) / 2**30:.1f} GiB"),
            ("OS, kernel", f"{m.get('os')}, {m.get('kernel')} ({m.get('architecture')})"),
        ]
    )
    machine_table.title = "Machine"
    stack_versions = [(f"stack: {k}", v) for k, v in results.stack_versions.items()]
    versions = key_values(stack_versions + [(f"host: {k}", v) for k, v in results.host_versions.items()])
    versions.title = "Versions"
    stacks = Table(
        ["stage", "variant", "image", "containers", "Docker userland proxy", "compose config"],
        [
            [
                s.get("stage", ""),
                s["target"] if not s.get("profile") else f"{s['target']} · {s['profile']}",
                str(s.get("image", ""))[:19],
                ", ".join(f"{k} x{len(v)}" for k, v in s.get("containers", {}).items()),
                "yes" if s.get("docker_userland_proxy") else "no",
                s.get("compose_config") or "not saved",
            ]
            for s in results.stacks
        ],
        title="Stacks",
    )
    return Section("Machine, versions and settings", tables=[machine_table, versions, stacks])


def _seconds_between(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_cell
    return env


def render(out_dir: Path) -> list[Path]:
    """Write the charts and both reports for the ``results.json`` in ``out_dir``."""
    results = Results.load(out_dir)
    figures = analyse(results)
    chart_files = charts.draw(figures, results, out_dir)
    context = build_context(results, figures, chart_files)
    env = environment()
    written = []
    for name in REPORTS:
        path = out_dir / name
        path.write_text(env.get_template(f"{name}.j2").render(**context))
        written.append(path)
    return written
