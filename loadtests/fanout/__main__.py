"""``python -m loadtests.fanout --host http://127.0.0.1:8000 --output fanout.json``: one stepped run."""

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.bench.config import FanoutSettings
from loadtests.fanout.generator import SENDER_RATE, FanoutRun, Plan
from loadtests.fanout.steps import StepResult, geometric_rates
from loadtests.lib.urls import normalize_base_url

MARKER = "FANOUT_JSON "  # the line a reader of the output finds the result on


DEFAULTS = FanoutSettings()  # the bench's, so that both run the same measurement unless told otherwise


def parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m loadtests.fanout", description=__doc__)
    p.add_argument("--host", required=True, help="the stack's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--rooms", type=int, default=d.rooms, help=f"default {d.rooms}")
    p.add_argument("--members", type=int, default=d.members, help=f"per room (default {d.members})")
    p.add_argument("--start", type=float, default=d.start, help="messages/s of the first step, all rooms")
    p.add_argument("--factor", type=float, default=d.factor, help="each step's rate over the previous one's")
    p.add_argument("--max-rate", type=float, default=d.max_rate, help="messages/s of the last step at most")
    p.add_argument(
        "--settle", type=float, default=d.settle, help="seconds of each step before it is measured"
    )
    p.add_argument("--step", type=float, default=d.duration, help="measured seconds of each step")
    p.add_argument("--grace", type=float, default=1.0, help="seconds for late copies before a step is judged")
    p.add_argument(
        "--warmup", type=float, default=d.warmup, help="seconds at the first step's rate, not measured"
    )
    p.add_argument("--p99-ms", type=float, default=d.p99_ms, help="a step holds while its p99 stays within")
    p.add_argument("--output", help="write the JSON result here as well")
    return p


def plan_of(args: argparse.Namespace) -> Plan:
    if args.rooms < 1 or args.members < 1:
        raise ValueError("--rooms and --members must be >= 1")
    if not (args.step > 0 and args.p99_ms > 0 and min(args.settle, args.grace, args.warmup) >= 0):
        raise ValueError("--step and --p99-ms must be > 0, --settle, --grace and --warmup >= 0")
    rates = geometric_rates(args.start, args.factor, args.max_rate)
    if rates[-1] > args.rooms * args.members * SENDER_RATE:
        raise ValueError(f"{rates[-1]:g} messages/s needs more than the {args.rooms * args.members} members")
    return Plan(
        normalize_base_url(args.host), args.rooms, args.members, tuple(rates), args.settle, args.step,
        args.p99_ms, args.grace, args.warmup,
    )  # fmt: skip


def show(step: StepResult) -> None:
    print(
        f"fanout: {step.offered_mps:>7.1f} msg/s  offered {step.offered_dps:>8,.0f}  "
        f"received {step.deliveries_per_s:>8,.0f} deliveries/s  p50 {step.p50_ms:>6.1f}  "
        f"p99 {step.p99_ms:>6.1f} ms  {'held' if step.passed else 'FAILED: ' + step.why}",
        flush=True,
    )


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        plan = plan_of(args)
    except ValueError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop  # optional: the standard loop does the same, slower

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        runner = asyncio.run
    try:
        result = runner(FanoutRun(plan, show).run())
    except (OSError, RuntimeError, TimeoutError) as exc:
        result = {"tool": "fanout", "error": f"{type(exc).__name__}: {exc}"}
    except KeyboardInterrupt:
        result = {"tool": "fanout", "error": "interrupted"}
    text = json.dumps(result)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(MARKER + text, flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
