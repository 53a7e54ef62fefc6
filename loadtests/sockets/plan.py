"""What a capacity run does and how a step is judged: pure logic, no sockets.

A run holds idle chat sockets in steps (2,000, 5,000, 10,000, ...): at each step it opens the
sockets the step adds, lets them settle, reads the containers' memory, broadcasts one message to
the room every socket is a member of, and counts who got it. A step holds when every handshake
succeeded, no open socket was dropped and every socket got the broadcast; the run stops at the
first step that does not, and says what broke.
"""

import errno
import ipaddress
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtests.fanout.steps import percentile

DEFAULT_STEPS = (2000, 5000, 10000, 20000, 30000, 40000)
# Handshakes per second: at 500, Daphne and Hypercorn refused some at 10,000 sockets (handshake and
# history-read deadlines), which is a limit of the rate of new sockets, not of holding them.
DEFAULT_RATE = 200.0
DEFAULT_SETTLE = 5.0  # seconds after a step's last handshake before it is measured
# Sockets per generator process, well below the open-files limit of a process (20,000 here): each
# socket is one descriptor, and a process needs some for itself.
SOCKETS_PER_PROCESS = 8000
# Sockets per source address on the loopback range: one address reaches the stack's published port
# from about 28,000 ephemeral ports (net.ipv4.ip_local_port_range).
SOCKETS_PER_SOURCE = 10000


class PlanError(ValueError):
    """A setting the run cannot go with; the message names it."""


def parse_steps(text: str) -> tuple[int, ...]:
    """``"2000,5000,10000"`` → rising socket counts."""
    try:
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise PlanError(f"--steps must be whole numbers separated by commas, got {text!r}") from None
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] < 1:
        raise PlanError(f"--steps must rise from at least 1, got {text!r}")
    return steps


def source_addresses(first: str, count: int) -> list[str]:
    """``count`` consecutive loopback addresses from ``first``: the generator's sources."""
    try:
        start = ipaddress.IPv4Address(first)
    except ValueError:
        raise PlanError(f"--source must be an IPv4 address, got {first!r}") from None
    addresses = [start + n for n in range(count)]
    if not all(address.is_loopback for address in addresses):
        raise PlanError(f"the sources {first} + {count} leave the loopback range 127.0.0.0/8")
    return [str(address) for address in addresses]


@dataclass(frozen=True)
class Plan:
    base_url: str
    steps: tuple[int, ...] = DEFAULT_STEPS
    rate: float = DEFAULT_RATE  # handshakes per second, over every process
    settle: float = DEFAULT_SETTLE
    delivery_timeout: float = 30.0  # seconds for every socket to get the step's broadcast
    room: str = "capacity"
    source: str = "127.0.0.1"  # the first source address; the run takes as many as it needs
    per_process: int = SOCKETS_PER_PROCESS
    per_source: int = SOCKETS_PER_SOURCE

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise PlanError(f"--rate must be > 0 handshakes per second, got {self.rate!r}")
        if not (self.settle >= 0 and math.isfinite(self.settle)):
            raise PlanError(f"--settle must be >= 0 seconds, got {self.settle!r}")

    @property
    def processes(self) -> int:
        return max(1, math.ceil(self.steps[-1] / self.per_process))

    @property
    def sources(self) -> list[str]:
        return source_addresses(self.source, max(1, math.ceil(self.steps[-1] / self.per_source)))


def failure_reason(exc: BaseException) -> str:
    """A failed handshake or a dropped socket, in words that say which side gave out."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return {
            errno.EMFILE: "client: too many open files",
            errno.EADDRNOTAVAIL: "client: no free local port",
            errno.ECONNREFUSED: "connection refused",
            errno.ECONNRESET: "connection reset",
        }.get(exc.errno, f"{type(exc).__name__} {errno.errorcode.get(exc.errno, exc.errno)}")
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


@dataclass
class Step:
    sockets: int  # the step's target
    open: int = 0  # open when the broadcast went out
    handshake_failures: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)  # open sockets the server or a proxy closed
    out_of_memory: Counter[str] = field(default_factory=Counter)  # container -> kills by its memory limit
    broadcast_error: str = ""  # why the step's broadcast could not be sent, when it could not
    nginx_errors: dict[str, int] = field(default_factory=dict)  # Nginx's error log during a failed step
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # component -> container -> bytes
    cpu_percent: dict[str, float] = field(default_factory=dict)  # component -> % of one core, idle sockets
    seconds: float = 0.0  # to open the step's sockets
    held: bool = False
    why: str = ""

    @property
    def missing(self) -> int:
        """Open sockets without the broadcast's copy; none when no broadcast went out."""
        return 0 if self.broadcast_error else max(0, self.open - self.delivered)

    def judge(self) -> "Step":
        reasons = []
        if self.handshake_failures:
            reasons.append("handshakes failed: " + counted(self.handshake_failures))
        if self.dropped:
            reasons.append("sockets dropped: " + counted(self.dropped))
        if self.broadcast_error:
            reasons.append(f"the broadcast could not be sent: {self.broadcast_error}")
        if self.missing:
            reasons.append(f"{self.missing} of {self.open} sockets missed the broadcast")
        if self.out_of_memory:
            # Named apart: the sockets a killed process held show up above only as "closed 1006".
            killed = counted(self.out_of_memory)
            reasons.append(f"out of memory (a process killed at its container's limit): {killed}")
        self.held, self.why = not reasons, "; ".join(reasons)
        return self

    def to_json(self, baseline: dict[str, dict[str, int]]) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "sockets": self.sockets,
            "open": self.open,
            "seconds_to_open": round(self.seconds, 1),
            "handshake_failures": dict(self.handshake_failures),
            "dropped": dict(self.dropped),
            "out_of_memory": dict(self.out_of_memory),
            "broadcast_error": self.broadcast_error,
            "nginx_errors": self.nginx_errors,
            "delivered": self.delivered,
            "missing": self.missing,
            "broadcast_p50_ms": round(percentile(ordered, 0.5), 1),
            "broadcast_p95_ms": round(percentile(ordered, 0.95), 1),
            "broadcast_p99_ms": round(percentile(ordered, 0.99), 1),
            "broadcast_max_ms": round(ordered[-1], 1) if ordered else 0.0,
            "memory_bytes": {component: sum(found.values()) for component, found in self.memory.items()},
            "bytes_per_socket": bytes_per_socket(baseline, self.memory, self.open),
            "cpu_percent": self.cpu_percent,
            "held": self.held,
            "why": self.why,
        }


def counted(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} x{count}" for reason, count in counter.most_common())


def bytes_per_socket(
    baseline: dict[str, dict[str, int]], now: dict[str, dict[str, int]], sockets: int
) -> dict[str, int]:
    """Each component's growth since before the first socket, per open socket."""
    if sockets <= 0:
        return {}
    return {
        component: round((sum(now[component].values()) - sum(baseline.get(component, {}).values())) / sockets)
        for component in now
    }


def summary(steps: Sequence[Step]) -> dict[str, Any]:
    """The most sockets a step held, and what stopped the run."""
    held = [step for step in steps if step.held]
    failed = next((step for step in steps if not step.held), None)
    return {
        "held": held[-1].open if held else 0,
        "stopped": f"{failed.sockets} sockets: {failed.why}" if failed else "every step held",
    }
