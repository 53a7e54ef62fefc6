"""Scenario settings, read from Locust's parsed options (CLI, environment, web UI form).

Pure: the options arrive as a plain namespace, so these functions are unit tested without
Locust. Every reader tolerates a missing namespace or attribute (Locust used as a library) and
falls back to the documented default.
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loadtests.lib import names
from loadtests.lib.urls import normalize_ws_url, origin_of, ws_base_url

# The server allows about 20 frames/s per connection (a token bucket with a burst). Scenarios
# measure latency, not the rate limiter, so no user sends faster than this.
MIN_SEND_INTERVAL = 0.06
ROOM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")  # the app's rule for room names


def _get(options: Any, name: str, default: Any) -> Any:
    value = getattr(options, name, None) if options is not None else None
    return default if value is None or value == "" else value


@dataclass(frozen=True)
class WsSettings:
    base: str  # ws(s)://host[:port][/prefix]
    origin: str
    timeout: float  # handshake and reply timeout, seconds


def ws_settings(host: str | None, options: Any) -> WsSettings:
    explicit = _get(options, "ws_url", "")
    base = normalize_ws_url(explicit) if explicit else ws_base_url(host)
    origin = _get(options, "ws_origin", "") or origin_of(host)
    timeout = float(_get(options, "ws_timeout", 10.0))
    if timeout <= 0:
        raise ValueError("--ws-timeout must be > 0")
    return WsSettings(base=base, origin=origin, timeout=timeout)


def send_interval(value: Any, option: str) -> float:
    interval = float(value)
    if not math.isfinite(interval) or interval < MIN_SEND_INTERVAL:
        raise ValueError(f"{option} must be >= {MIN_SEND_INTERVAL} s (the server rate-limits faster senders)")
    return interval


def parse_weights(
    spec: str | None,
    choices: Iterable[str],
    option: str,
    *,
    every: tuple[str, ...] = ("",),
    zero: bool = False,
) -> dict[str, int]:
    """``"a,b:3"`` → ``{"a": 1, "b": 3}``, each name one of ``choices``; a spec in ``every`` (empty)
    → every choice, equal weights. Refuses an unknown or repeated name, a weight that is not a whole
    number or is below 1 (below 0 with ``zero``: a choice left out), and weights that are all 0."""
    text = (spec or "").strip()
    known = list(choices)
    if text in every:
        return dict.fromkeys(known, 1)
    weights: dict[str, int] = {}
    for item in text.split(","):
        key, _, raw_weight = item.strip().partition(":")
        if key not in known:
            raise ValueError(f"{option}: unknown {key!r}; choose from {', '.join(known)}")
        if key in weights:
            raise ValueError(f"{option}: {key!r} is named twice")
        try:
            weight = int(raw_weight) if raw_weight else 1
        except ValueError:
            raise ValueError(
                f"{option}: weight of {key!r} must be a whole number, got {raw_weight!r}"
            ) from None
        if weight < (0 if zero else 1):
            raise ValueError(f"{option}: weight of {key!r} must be >= {0 if zero else 1}")
        weights[key] = weight
    if not any(weights.values()):
        raise ValueError(f"{option}: at least one needs a weight above 0")
    return weights


def parse_endpoint_weights(spec: str | None) -> dict[str, int]:
    """``"ping,db:3"`` → ``{"ping": 1, "db": 3}``; empty or ``all`` → every endpoint, equal weights."""
    return parse_weights(spec, names.HTTP_ENDPOINTS, "--http-endpoints", every=("", "all"))


def room_names(base: str, count: int) -> list[str]:
    """``count`` rooms: the base name itself for one room, ``base-1`` … ``base-N`` for several."""
    if count < 1:
        raise ValueError("--chat-rooms must be >= 1")
    rooms = [base] if count == 1 else [f"{base}-{i}" for i in range(1, count + 1)]
    for room in rooms:
        if not ROOM_NAME.match(room):
            raise ValueError(f"room name {room!r} is not 1-100 of letters, digits, '-', '_', '.'")
    return rooms


@dataclass(frozen=True)
class ChatSettings:
    rooms: list[str]
    senders_per_room: int
    interval: float  # seconds between two messages of one sender
    ack_timeout: float
    settle: float  # seconds between the last user's start and the first message

    @property
    def senders(self) -> int:
        return self.senders_per_room * len(self.rooms)


def chat_settings(options: Any) -> ChatSettings:
    rooms = room_names(str(_get(options, "chat_room", "loadtest")), int(_get(options, "chat_rooms", 1)))
    senders_per_room = int(_get(options, "chat_senders_per_room", 1))
    if senders_per_room < 1:
        raise ValueError("--chat-senders-per-room must be >= 1 (idle room members: the capacity scenario)")
    ack_timeout = float(_get(options, "chat_ack_timeout", 10.0))
    if ack_timeout <= 0:
        raise ValueError("--chat-ack-timeout must be > 0")
    settle = float(_get(options, "chat_settle", 2.0))
    if not settle >= 0:
        raise ValueError("--chat-settle must be >= 0")
    return ChatSettings(
        rooms=rooms,
        senders_per_room=senders_per_room,
        interval=send_interval(_get(options, "chat_interval", 1.0), "--chat-interval"),
        ack_timeout=ack_timeout,
        settle=settle,
    )


@dataclass(frozen=True)
class CapacitySettings:
    path: str
    ping_interval: float
    settle: float
    memory_containers: str
    memory_cgroups: list[str]
    memory_pids: list[int]
    report: str

    @property
    def measures_memory(self) -> bool:
        return bool(self.memory_containers or self.memory_cgroups or self.memory_pids)


def _csv(value: Any) -> list[str]:
    return [item.strip() for item in str(value).split(",") if item.strip()]


def capacity_settings(options: Any) -> CapacitySettings:
    path = str(_get(options, "capacity_path", names.ECHO_PATH))
    if not path.startswith("/"):
        raise ValueError("--capacity-path must be an absolute path such as /ws/echo/")
    ping_interval = float(_get(options, "capacity_ping_interval", 20.0))
    settle = float(_get(options, "capacity_settle", 5.0))
    if ping_interval <= 0 or settle < 0:
        raise ValueError("--capacity-ping-interval must be > 0 and --capacity-settle >= 0")
    try:
        pids = [int(pid) for pid in _csv(_get(options, "capacity_memory_pids", ""))]
    except ValueError:
        raise ValueError("--capacity-memory-pids must be a comma-separated list of process ids") from None
    return CapacitySettings(
        path=path,
        ping_interval=ping_interval,
        settle=settle,
        memory_containers=str(_get(options, "capacity_memory_containers", "")),
        memory_cgroups=_csv(_get(options, "capacity_memory_cgroups", "")),
        memory_pids=pids,
        report=str(_get(options, "capacity_report", "")),
    )


def echo_interval(options: Any) -> float:
    """Seconds between two echo messages of one user (constant pacing)."""
    return send_interval(_get(options, "echo_interval", 0.1), "--echo-interval")


def http_weights(options: Any) -> dict[str, int]:
    return parse_endpoint_weights(_get(options, "http_endpoints", ""))


@dataclass(frozen=True)
class SoakSettings:
    rooms: int
    room_lifetime: float
    messages: int
    message_interval: float
    idle: float
    leaves: dict[str, int]  # how a session ends → weight
    http_users: int


def parse_leave_weights(spec: str | None) -> dict[str, int]:
    """``"clean:2,reset"`` → ``{"clean": 2, "reset": 1}`` (0 leaves a way out); empty → every way."""
    return parse_weights(spec, names.SOAK_LEAVES, "--soak-leave", zero=True)


def soak_settings(options: Any) -> SoakSettings:
    rooms = int(_get(options, "soak_rooms", 20))
    lifetime = float(_get(options, "soak_room_lifetime", 60.0))
    messages = int(_get(options, "soak_messages", 3))
    idle = float(_get(options, "soak_idle", 5.0))
    http_users = int(_get(options, "soak_http_users", 2))
    if rooms < 1 or messages < 0 or http_users < 1:
        raise ValueError("--soak-rooms and --soak-http-users must be >= 1, --soak-messages >= 0")
    if not (lifetime > 0 and math.isfinite(lifetime) and idle >= 0 and math.isfinite(idle)):
        raise ValueError("--soak-room-lifetime must be > 0 and --soak-idle >= 0 (seconds)")
    return SoakSettings(
        rooms=rooms,
        room_lifetime=lifetime,
        messages=messages,
        message_interval=send_interval(
            _get(options, "soak_message_interval", 1.0), "--soak-message-interval"
        ),
        idle=idle,
        leaves=parse_leave_weights(_get(options, "soak_leave", "")),
        http_users=http_users,
    )


def soak_room(now: float, lifetime: float, index: int) -> str:
    """The name of room ``index`` of the set open at ``now`` (seconds since the epoch).

    Each ``lifetime`` seconds a new set of names begins, so rooms come and go: the old rooms empty
    as their sessions end, and nobody joins them again.
    """
    return f"soak-{int(now // lifetime)}-{index}"
