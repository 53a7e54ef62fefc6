"""What the machine's CPUs and the generator itself spent over a step's measured window.

Beside a step's latency, this says whether the step that failed had run out of CPU: the generator,
Nginx, the app and Redis share the machine, so its busy cores near its core count mean the step
met the CPU limit, and the generator's own share says how much of it the load itself took.
"""

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuReading:
    at: float  # time.monotonic()
    busy: float  # seconds the machine's CPUs were busy, all of them together
    own: float  # this process's CPU seconds


def read() -> CpuReading:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # On Linux, guest time is counted in user time already (psutil's own cpu_percent does the same).
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    own = psutil.Process().cpu_times()
    return CpuReading(time.monotonic(), sum(times) - idle - guest, own.user + own.system)


def cores_used(before: CpuReading, after: CpuReading) -> tuple[float, float]:
    """(the machine's busy cores, the generator's cores) on average between two readings."""
    seconds = after.at - before.at
    if seconds <= 0:
        return 0.0, 0.0
    return (
        round(max(0.0, after.busy - before.busy) / seconds, 2),
        round(max(0.0, after.own - before.own) / seconds, 2),
    )


def machine_cores() -> int:
    return psutil.cpu_count() or 1
