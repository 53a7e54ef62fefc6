"""``results.json``, the one record of a bench run, as typed records that read and write it.

The runner fills a ``Results`` stage by stage and saves it after each; the report reads it back and
renders from it alone. What is measured (measurements, their runs, errors) is typed, because the
analysis computes with it. What describes the run (machine, versions, settings, stacks) stays as the
JSON objects it was written as: the report prints those as they are.
"""

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
FILE_NAME = "results.json"

# One row of a tool's output, by the name Locust or wrk gives it: requests, failures, rps, p50_ms,
# p95_ms, p99_ms, ... (locust_csv.read_run, wrk.parse_output).
Row = dict[str, float]
MeasurementKey = tuple[str, str, str, str, str]  # target, profile, scenario, case, tool


def _fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    """A missing key, not ``null``: ``"error" in run`` means the run failed."""
    return {key: value for key, value in data.items() if value is not None}


@dataclass
class Run:
    """One run of a tool: its rows, or why it produced none."""

    tool: str = ""  # locust or wrk
    started_at: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    dir: str = ""  # the run's own files (logs, CSVs), relative to the results folder
    command: list[str] | None = None
    rows: dict[str, Row] | None = None
    failure_samples: list[str] | None = None
    memory: dict[str, Any] | None = None  # capacity runs: the memory report of loadtests/lib/memory.py
    # The app's own /metrics over the run (loadtests/bench/server_metrics.py): Django's time per
    # route, CPU seconds, frames, fan-out.
    server: dict[str, Any] | None = None
    # Fan-out and sockets runs: every step (loadtests/fanout/steps.py, loadtests/sockets/plan.py).
    steps: list[dict[str, Any]] | None = None
    error: str | None = None
    index: int = 0  # 1, 2, ... within its measurement

    def ok(self, row: str) -> bool:
        """Whether this run measured ``row``."""
        return self.error is None and self.rows is not None and row in self.rows

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Run":
        return cls(**_fields(cls, data))


@dataclass
class Measurement:
    """The runs of one target (a variant or a ceiling target), profile, scenario case and tool."""

    kind: str  # "ceiling" or "variant"
    target: str
    profile: str
    scenario: str  # http, echo, chat, capacity
    case: str  # endpoint path, "/ws/echo/", "1000 users, 10 rooms", "2000 sockets"
    tool: str
    row: str  # the tool's row that carries the figure
    runs: list[Run] = field(default_factory=list)
    stage: str = ""  # the stage that measured it (a failed attempt of that stage forgets it)

    @property
    def key(self) -> MeasurementKey:
        return (self.target, self.profile, self.scenario, self.case, self.tool)

    def measured(self) -> list[Run]:
        """The runs that produced the figure, in the order run."""
        return [run for run in self.runs if run.ok(self.row)]

    def add(self, run: Run) -> None:
        run.index = len(self.runs) + 1
        self.runs.append(run)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "runs": [run.to_json() for run in self.runs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Measurement":
        fields = _fields(cls, data)
        fields.setdefault("kind", "variant")
        fields.setdefault("profile", "")
        fields["runs"] = [Run.from_json(run) for run in data.get("runs", [])]
        return cls(**fields)


@dataclass
class BenchError:
    """A step that went wrong: the report lists these under Errors."""

    stage: str
    step: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BenchError":
        return cls(**_fields(cls, data))


@dataclass
class Results:
    schema_version: int = SCHEMA_VERSION
    status: str = "running"  # running, complete or interrupted
    started_at: str = ""
    finished_at: str = ""
    command: list[str] = field(default_factory=list)  # with the BENCH_* settings from the environment
    machine: dict[str, Any] = field(default_factory=dict)
    host_versions: dict[str, str] = field(default_factory=dict)
    stack_versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # the configuration, as the report states it
    stacks: list[dict[str, Any]] = field(default_factory=list)  # one record per stack brought up
    measurements: list[Measurement] = field(default_factory=list)
    errors: list[BenchError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what went wrong and was recovered from
    soaks: list[dict[str, Any]] = field(default_factory=list)  # one soak.json per variant (loadtests/soak)

    def measurement(
        self,
        target: str,
        profile: str,
        scenario: str,
        case: str,
        tool: str,
        row: str,
        kind: str = "variant",
        stage: str = "",
    ) -> Measurement:
        """The measurement of that key, created (in the order measured) on first use."""
        key = (target, profile, scenario, case, tool)
        for found in self.measurements:
            if found.key == key:
                return found
        created = Measurement(kind, target, profile, scenario, case, tool, row, stage=stage)
        self.measurements.append(created)
        return created

    def forget(self, stage: str) -> None:
        """Drop the measurements and stack records of a failed attempt of ``stage``."""
        self.measurements = [m for m in self.measurements if m.stage != stage]
        self.stacks = [s for s in self.stacks if s.get("stage") != stage]
        self.soaks = [s for s in self.soaks if s.get("stage") != stage]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["measurements"] = [m.to_json() for m in self.measurements]
        data["errors"] = [e.to_json() for e in self.errors]
        if not self.finished_at:
            del data["finished_at"]
        if not self.soaks:  # a bench without the soak writes the file it always wrote
            del data["soaks"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Results":
        fields = _fields(cls, data)
        fields["measurements"] = [Measurement.from_json(m) for m in data.get("measurements", [])]
        fields["errors"] = [BenchError.from_json(e) for e in data.get("errors", [])]
        return cls(**fields)

    def save(self, folder: Path) -> Path:
        path = folder / FILE_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "Results":
        return cls.from_json(json.loads((folder / FILE_NAME).read_text()))
