"""Scenario ``chat``: fan-out latency in chat rooms on ``/ws/chat/<room>/``.

Users join ``--chat-rooms`` rooms (spread evenly). Only ``--chat-senders-per-room`` users per room
send, one message every ``--chat-interval`` seconds each, so a room carries a fixed, small message
rate and what grows with the user count is the fan-out, which is what this measures. Each message
carries its sender's id, a sequence number and its wall-clock send time.

Senders start once every user has started, on every worker, and ``--chat-settle`` seconds more for
the last handshakes: a delivery is measured with the room full, not while hundreds of members are
still joining. The join storm has rows of its own.

Rows (request type ``WS``):

- ``connect /ws/chat/[room]/``: handshakes; ``chat join``: handshake start → history frame;
- ``chat fan-out delivery``: send → receipt by every other member (wall clocks, same machine);
- ``chat ack round trip``: send → the sender's own copy (the server's acknowledgement);
- ``chat error frame`` and ``disconnect /ws/chat/[room]/``: failures.
"""

import contextlib
import itertools
import json
import os
import secrets
import time
from typing import Any, ClassVar

from locust import constant, constant_pacing, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.lib import names, options
from loadtests.lib.probe import (
    Probe,
    UnexpectedFrameError,
    decode_probe,
    encode_probe,
    latency_ms,
    parse_frame,
    server_error,
)
from loadtests.lib.settings import ChatSettings, chat_settings, ws_settings
from loadtests.lib.wsuser import SOCKET_ERRORS, WebSocketUser

options.register()
options.validate_at_init(
    lambda environment: (
        chat_settings(environment.parsed_options),
        ws_settings(environment.host, environment.parsed_options),
    )
)


class RoomsFilling:
    """When senders may start: every user started (all workers) plus ``--chat-settle`` seconds.

    Locust fires ``spawning_complete`` on a worker once the master has heard from every worker.
    """

    settle = 0.0
    full_at: float | None = None  # time.monotonic() from which the rooms count as full

    @classmethod
    def on_test_start(cls, environment: Environment, **_kwargs: Any) -> None:
        cls.full_at = None
        with contextlib.suppress(ValueError):  # reported by validate_at_init
            cls.settle = chat_settings(environment.parsed_options).settle

    @classmethod
    def on_spawning_complete(cls, **_kwargs: Any) -> None:
        cls.full_at = time.monotonic() + cls.settle

    @classmethod
    def full(cls) -> bool:
        return cls.full_at is not None and time.monotonic() >= cls.full_at


events.test_start.add_listener(RoomsFilling.on_test_start)
events.spawning_complete.add_listener(RoomsFilling.on_spawning_complete)


class AckTimeoutError(Exception):
    """A sent message whose own copy did not come back within --chat-ack-timeout."""


class ChatMember(WebSocketUser):
    abstract = True
    path_label = names.CHAT_PATH_LABEL
    role = "member"
    _slots: ClassVar[itertools.count]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._slots = itertools.count()  # one round-robin over the rooms per role

    def on_start(self) -> None:
        super().on_start()
        self.chat: ChatSettings = chat_settings(self.environment.parsed_options)
        slot = self._next_slot()
        self.room = self.chat.rooms[slot % len(self.chat.rooms)]
        # Unique across processes and machines: receivers tell their own copies apart by it.
        self.member_id = f"{self.role}-{os.getpid()}-{slot}-{secrets.token_hex(3)}"
        self.joined = False
        self.pending: dict[int, float] = {}  # own messages awaiting their copy: seq → perf_counter()
        self.start_receiver()

    def _next_slot(self) -> int:
        # Round robin per process, offset by the worker's index so that with --processes the
        # workers' first users land in different rooms and the rooms fill evenly overall.
        offset = max(0, getattr(self.environment.runner, "worker_index", 0))
        return next(type(self)._slots) + offset

    def ws_path(self) -> str:
        return f"/ws/chat/{self.room}/?name=lt-{self.role}"

    def on_connected(self) -> None:
        # Messages sent on the previous socket will not come back; that drop is already reported.
        self.joined = False
        self.pending.clear()

    def on_text(self, text: str) -> None:
        received_at, now = time.time(), time.perf_counter()
        try:
            frame = parse_frame(text)
        except UnexpectedFrameError as exc:
            self.fire(names.CHAT_ERROR, 0, len(text), exception=exc)
            return
        kind = frame.get("type")
        if kind == "chat.message":
            self._on_message(frame, text, received_at, now)
        elif kind == "chat.history" and not self.joined:
            self.joined = True
            self.fire(names.CHAT_JOIN, (now - self.connected_at) * 1000.0, len(text))
        elif (error := server_error(frame)) is not None:
            # The server answers frames in order, so an error (rate_limited, storage_unavailable)
            # belongs to the oldest unacknowledged send, which will never be acknowledged: forget it
            # here so that it is not counted a second time as an ack timeout.
            if self.pending:
                del self.pending[next(iter(self.pending))]
            self.fire(names.CHAT_ERROR, 0, len(text), exception=error)

    def _on_message(self, frame: dict[str, Any], text: str, received_at: float, now: float) -> None:
        probe = decode_probe(frame.get("message"))
        if probe is None:
            return  # someone else's message in the room
        if probe.sender != self.member_id:
            self.fire(names.CHAT_DELIVERY, latency_ms(probe.sent_at, received_at), len(text))
            return
        started = self.pending.pop(probe.seq, None)
        if started is not None:  # None: already reported as an ack timeout
            self.fire(names.CHAT_ACK, (now - started) * 1000.0, len(text))


class ChatListener(ChatMember):
    """Most users: members that only receive (the receiver greenlet does all the work)."""

    role = "listener"
    weight = 1
    wait_time = constant(5)

    @task
    def listen(self) -> None:
        self.start_receiver()  # restarts the receiver should it ever have ended


class ChatSender(ChatMember):
    """Exactly --chat-senders-per-room x --chat-rooms users (``fixed_count``, set from the options)."""

    role = "sender"
    fixed_count = 1

    def on_start(self) -> None:
        super().on_start()
        self.seq = 0
        self._pacing = constant_pacing(self.chat.interval)

    def wait_time(self) -> float:
        return self._pacing(self)

    @task
    def send(self) -> None:
        self._expire_pending()
        if self.ws is None or not self.joined or not RoomsFilling.full():
            return  # (re)connecting (the receiver greenlet owns the connection), or members still joining
        self.seq += 1
        probe = Probe(sender=self.member_id, seq=self.seq, sent_at=time.time())
        self.pending[self.seq] = time.perf_counter()  # before sending: the copy can arrive first
        try:
            self.send_text(json.dumps({"message": encode_probe(probe)}))
        except SOCKET_ERRORS:
            self.pending.pop(self.seq, None)  # the receiver reports the broken socket

    def _expire_pending(self) -> None:
        now = time.perf_counter()
        for seq, started in list(self.pending.items()):
            if now - started > self.chat.ack_timeout:
                del self.pending[seq]
                self.fire(
                    names.CHAT_ACK,
                    (now - started) * 1000.0,
                    exception=AckTimeoutError(f"no copy of own message within {self.chat.ack_timeout:g} s"),
                )


def _set_sender_count(environment: Environment, **_kwargs: Any) -> None:
    # Locust's master dispatches fixed_count users exactly across all workers, which is what makes
    # "one sender per room" hold with --processes. Set again at each test start because the web UI
    # can change the options between runs.
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        ChatSender.fixed_count = chat_settings(environment.parsed_options).senders
    except ValueError:
        return  # reported by validate_at_init, or by the users when they start


events.init.add_listener(_set_sender_count)
events.test_start.add_listener(_set_sender_count)
