"""What a load-test message carries, and how received frames are read.

A probe is the text of a chat or echo message: a small JSON object with the sender's id, a
sequence number and the wall-clock send time. Receivers compute the delivery latency from it, so
the server needs no cooperation and the message stays an ordinary chat message.
"""

import json
from dataclasses import dataclass
from typing import Any

PROBE_MARK = "lt"  # distinguishes our probes from messages a person types into the same room


@dataclass(frozen=True)
class Probe:
    sender: str
    seq: int
    sent_at: float  # time.time() at send: comparable across processes on one machine


class ServerError(Exception):
    """An error frame ``{"type": "error", "code": ..., "detail": ...}``, reported as a failure."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class UnexpectedFrameError(Exception):
    """A frame that is not what the scenario waited for (wrong echo, not JSON, ...)."""


def encode_probe(probe: Probe) -> str:
    return json.dumps(
        {PROBE_MARK: 1, "sender": probe.sender, "seq": probe.seq, "sent_at": probe.sent_at},
        separators=(",", ":"),
    )


def decode_probe(text: object) -> Probe | None:
    """The probe in a message text, or None for anything else (a person's message, other tools)."""
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get(PROBE_MARK) != 1:
        return None
    sender, seq, sent_at = data.get("sender"), data.get("seq"), data.get("sent_at")
    if not isinstance(sender, str) or type(seq) is not int or type(sent_at) not in (int, float):
        return None
    return Probe(sender=sender, seq=seq, sent_at=float(sent_at))


def latency_ms(sent_at: float, received_at: float) -> float:
    """Send → receipt in milliseconds, from two wall-clock readings.

    Negative values (the wall clock stepped back, or two machines' clocks disagree) are clamped to
    0 instead of corrupting Locust's percentiles; the README says to keep clocks in sync when
    senders and receivers run on different machines.
    """
    return max(0.0, (received_at - sent_at) * 1000.0)


def is_heartbeat(text: str) -> bool:
    """The app's keep-alive frame, ``{"type": "heartbeat"}`` (app/core/consumers.py, WS_APP_HEARTBEAT)."""
    if "heartbeat" not in text:  # the common case, without parsing
        return False
    try:
        return json.loads(text) == {"type": "heartbeat"}
    except ValueError:
        return False


def parse_frame(text: str | bytes) -> dict[str, Any]:
    """A server frame as a JSON object; anything else raises ``UnexpectedFrameError``."""
    if isinstance(text, bytes):
        raise UnexpectedFrameError(f"binary frame of {len(text)} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        raise UnexpectedFrameError(f"frame is not JSON: {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise UnexpectedFrameError(f"frame is not a JSON object: {text[:80]!r}")
    return data


def server_error(frame: dict[str, Any]) -> ServerError | None:
    """The error an error frame carries, or None for any other frame."""
    if frame.get("type") != "error":
        return None
    return ServerError(str(frame.get("code", "unknown")), str(frame.get("detail", "")))


def close_status(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a close frame's payload (RFC 6455 §5.5.1); no code when it is empty."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")
