"""The chat wire protocol: parsing client frames, and the stable error codes and close codes.

Bad input never closes the socket: it is answered with an error frame
``{"type": "error", "code": ..., "detail": ...}`` and the connection stays open.
"""

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_MESSAGE = "missing_message"
    INVALID_MESSAGE = "invalid_message"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the message was NOT stored: send it again
    LAYER_UNAVAILABLE = "layer_unavailable"
    TOO_SLOW = "too_slow"  # the socket fell too far behind its room's broadcasts


class CloseCode:
    """Close codes the app sends. Plain ints: some servers (Daphne) refuse int subclasses."""

    POLICY_VIOLATION: Final = 1008  # kept flooding after being rate limited
    MESSAGE_TOO_BIG: Final = 1009  # over WS_MAX_MESSAGE_BYTES (most servers close with it before the app)
    INTERNAL_ERROR: Final = 1011  # the app failed on this socket (logged), as servers do when an app raises
    SERVICE_RESTART: Final = 1012  # the server is stopping (a restart, a deploy): reconnect now
    TRY_AGAIN_LATER: Final = 1013  # the database or the channel layer is unavailable: reconnect later


ROOM_PATTERN = r"[A-Za-z0-9._-]{1,100}"  # also the chat route's (chat/routing.py)
ROOM_NAME = re.compile(rf"^{ROOM_PATTERN}$")
USER_NAME = re.compile(r"^[A-Za-z0-9 ._-]{1,32}$")
ANONYMOUS = "anonymous"


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def as_frame(self) -> str:
        return error_frame(self.code, self.detail)


def error_frame(code: ErrorCode, detail: str) -> str:
    return json.dumps({"type": "error", "code": code.value, "detail": detail})


@dataclass(frozen=True)
class ClientMessage:
    text: str


def parse_client_frame(text: str, max_chars: int) -> ClientMessage:
    """Parse ``{"message": "<text>"}``; raise ``ProtocolError`` for anything else."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "frame is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ProtocolError(ErrorCode.NOT_AN_OBJECT, "frame must be a JSON object")
    if "message" not in payload:
        raise ProtocolError(ErrorCode.MISSING_MESSAGE, 'frame must have a "message" field')
    message = payload["message"]
    if not isinstance(message, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, '"message" must be a string')
    if not message.strip():
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, '"message" must not be empty')
    if len(message) > max_chars:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LONG, f'"message" is longer than {max_chars} characters')
    return ClientMessage(text=message)


def is_valid_room(room: str) -> bool:
    return bool(ROOM_NAME.match(room))


def display_name(requested: str | None) -> str:
    """A client-chosen display name if it is well-formed, else ``anonymous``."""
    if requested and USER_NAME.match(requested.strip()):
        return requested.strip()
    return ANONYMOUS
