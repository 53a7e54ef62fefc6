"""The report's "Capacity to the limit" section: per variant, the sockets held, what stopped them,
memory per socket of the app, Nginx and Redis, and the broadcast's p99 at set counts
(``loadtests/bench/sockets.py``)."""

from typing import Any

from loadtests.bench import sockets
from loadtests.bench.analysis import Figures, median_run
from loadtests.bench.report import Index, Section, Table, fmt_count, fmt_kib, fmt_ms, fmt_spread
from loadtests.bench.results import Measurement, Results

COLUMNS = [
    "variant",
    "sockets held",
    "stopped (median run)",
    "memory at (sockets)",
    *(f"{label} per socket" for label in sockets.COMPONENTS.values()),
    *(f"broadcast p99 ms at {n:,}" for n in sockets.P99_AT),
    "runs",
]


def memory_cells(measurement: Measurement) -> list[str]:
    """The sockets the memory was read at, and each component's bytes per socket there (the runs)."""
    found = sockets.memory_over_runs(measurement)
    if found is None:
        return ["no step held", *("" for _ in sockets.COMPONENTS)]
    at, per_socket = found

    def kib(value: float) -> str:
        # A component that grew nothing can read a few bytes below its baseline: 0, not -0.0.
        return fmt_kib(max(0.0, value))

    return [
        fmt_spread(at, fmt_count),
        *(fmt_spread(per_socket[c], kib) if c in per_socket else "not measured" for c in sockets.COMPONENTS),
    ]


def p99_cells(measurement: Measurement) -> list[str]:
    cells = []
    for count in sockets.P99_AT:
        found = sockets.p99_at(measurement, count)
        cells.append(fmt_spread(found, fmt_ms) if found else "not reached")
    return cells


def variant_row(label: str, f: Figures, measurement: Measurement) -> list[str]:
    run = median_run(measurement)
    return [
        label,
        fmt_spread(f.rps, fmt_count),  # the row's figure: sockets held
        sockets.stopped(run) if run else "",
        *memory_cells(measurement),
        *p99_cells(measurement),
        str(f.runs),
    ]


def settings_paragraph(settings: dict[str, Any]) -> str:
    steps = ", ".join(f"{n:,}" for n in settings.get("steps", []))
    return (
        f"Idle chat WebSockets, every one a member of one room, opened in steps ({steps}) at "
        f"{settings.get('rate', 0):g} handshakes/s from several processes and loopback addresses "
        "(loadtests/sockets), in a stack of each variant's own: "
        f"{settings.get('replicas')} app replicas, Nginx with {settings.get('nginx_workers')} workers of "
        f"{settings.get('nginx_connections', 0):,} connections and a {settings.get('nginx_memory')} memory "
        "limit (NGINX_WORKER_PROCESSES, NGINX_WORKER_CONNECTIONS, NGINX_MEMORY_LIMIT: a "
        "process may hold 20,000 open files on this host and a WebSocket takes two of a worker's "
        "connections, so a worker holds at most ~9,700; Nginx needs about 28 KB per socket). "
        f"Each step settles {settings.get('settle', 0):g} s, then the containers' memory is read "
        "(docker stats) and one message is broadcast to the room. A step holds when every handshake "
        "succeeded, no socket was dropped and every socket got the broadcast; the run stops at the "
        "first step that does not."
    )


READING = (
    "Sockets held: the most sockets a step held (median of the runs, min to max); stopped: what the "
    "median run saw at the step that failed. Memory per socket: each component's growth since before "
    "the first socket, divided by the sockets open, at each run's largest step that held (median of "
    "the runs, min to max; every run has a stack of its own, so its containers start fresh). "
    "Broadcast p99: from the message's send to its copy at each socket, over the runs whose step at "
    "that count held."
)


def sockets_section(index: Index, results: Results, chart_files: dict[str, str]) -> Section | None:
    rows = []
    for target, profile in index.variants:
        f = next(
            (x for x in index.figures if (x.target, x.profile, x.scenario) == (target, profile, "sockets")),
            None,
        )
        measurement = sockets.measurement(results, target, profile)
        if f is not None and measurement is not None:
            rows.append(variant_row(index.label(target, profile), f, measurement))
    if not rows:
        return None
    return Section(
        "Capacity to the limit",
        paragraphs=[settings_paragraph(results.settings.get("sockets", {})), READING],
        tables=[Table(COLUMNS, rows)],
        charts=[(chart_files["sockets"], "sockets held, and memory per socket of the app, Nginx and Redis")]
        if "sockets" in chart_files
        else [],
    )
