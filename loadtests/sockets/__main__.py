"""``python -m loadtests.sockets --host http://127.0.0.1:8000 [--project NAME]``: idle chat sockets
through the stack in steps (2,000, 5,000, 10,000, ...), each a member of one room, until a step
fails; per step the handshakes that failed, the sockets dropped, memory per socket of the app,
Nginx and Redis (with ``--project``, the stack's compose project), and a broadcast's delivery time
to every socket. The result is printed as a table, and as JSON on the line starting SOCKETS_JSON.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.lib.urls import normalize_base_url
from loadtests.sockets.plan import (
    DEFAULT_RATE,
    DEFAULT_SETTLE,
    DEFAULT_STEPS,
    Plan,
    PlanError,
    Step,
    failure_reason,
    parse_steps,
)
from loadtests.sockets.run import CapacityRun

MARKER = "SOCKETS_JSON "


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.sockets", description=__doc__)
    p.add_argument("--host", required=True, help="the stack's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--project", help="the stack's compose project: memory per socket of each component")
    p.add_argument(
        "--steps",
        default=",".join(map(str, DEFAULT_STEPS)),
        help="socket counts, rising (default %(default)s)",
    )
    p.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="handshakes per second (default %(default)s)"
    )
    p.add_argument(
        "--settle", type=float, default=DEFAULT_SETTLE, help="seconds before a step is measured (%(default)s)"
    )
    p.add_argument("--source", default="127.0.0.1", help="the first loopback source address")
    p.add_argument("--output", help="write the JSON result here as well")
    return p


def print_step(step: Step) -> None:
    found = step.to_json({})
    print(
        f"sockets: {step.sockets:>7,}  open {step.open:>7,} in {found['seconds_to_open']:>5.1f} s  "
        f"broadcast p99 {found['broadcast_p99_ms']:>7.1f} ms  "
        + ("held" if step.held else f"FAILED: {step.why}"),
        flush=True,
    )
    for message, count in step.nginx_errors.items():
        print(f"  nginx said x{count}: {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = Plan(
            normalize_base_url(args.host), steps=parse_steps(args.steps), rate=args.rate,
            settle=args.settle, source=args.source,
        )  # fmt: skip
        plan.sources  # noqa: B018 - checked before any process starts
    except (PlanError, ValueError) as exc:
        print(f"sockets: {exc}", file=sys.stderr)
        return 2
    try:
        found = CapacityRun(plan, args.project, on_step=print_step).run()
    except OSError as exc:  # before the first step: the stack does not answer
        print(f"sockets: {plan.base_url} does not answer: {failure_reason(exc)}", file=sys.stderr)
        return 1
    text = json.dumps(found)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(MARKER + text)
    print(f"sockets: held {found['held']:,}; stopped: {found['stopped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
