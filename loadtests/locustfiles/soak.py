"""Scenario ``soak``: a steady churn of chat sessions, and HTTP requests on every endpoint.

Each ``SoakChurnUser`` runs one session after another: it connects to a chat room, waits for the
room's history, sends ``--soak-messages`` messages (each acknowledged by its own copy), idles
around ``--soak-idle`` seconds while the room's traffic arrives, then leaves in one of three ways
(``--soak-leave``, weighted):

- ``clean``: a WebSocket close handshake;
- ``reset``: an abortive close (``SO_LINGER`` 0): the server sees a TCP RST, no close frame;
- ``mid-message``: the first half of a text frame, then the socket's end (FIN): the server is left
  with a frame that never completes.

Rooms come and go: ``--soak-rooms`` names are open at a time, and every ``--soak-room-lifetime``
seconds a new set replaces them, so the server keeps creating and emptying groups. Of the ``-u``
users, ``--soak-http-users`` request every HTTP endpoint in turn (``names.SOAK_HTTP_PATHS``) and
the others churn. ``-t`` (and ``--max-run-time``) bound the run.

Rows: ``connect /ws/chat/[room]/``, ``soak join``, ``soak ack round trip``, ``soak leave <how>``
(the session's length), ``chat error frame``, the HTTP paths. What the churn leaves behind on the
server is not Locust's to see: the soak runner (loadtests/soak) samples the containers meanwhile.
"""

import json
import random
import secrets
import socket
import struct
import time
from typing import Any

import gevent
import websocket
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.lib import names, options
from loadtests.lib.probe import UnexpectedFrameError, parse_frame, server_error
from loadtests.lib.settings import SoakSettings, soak_room, soak_settings, ws_settings
from loadtests.lib.urls import DEFAULT_BASE_URL
from loadtests.lib.wsuser import SOCKET_ERRORS, SocketClosedError, WebSocketUser, describe, ms_since

options.register()
options.validate_at_init(
    lambda environment: (
        soak_settings(environment.parsed_options),
        ws_settings(environment.host, environment.parsed_options),
    )
)

# Seconds to wait for a frame the session needs (the history, a message's own copy).
REPLY_TIMEOUT = 10.0


class AckTimeoutError(Exception):
    """A message whose own copy did not come back."""


def leave_abruptly(ws: websocket.WebSocket) -> None:
    """Close with a TCP RST instead of a FIN: no close frame, no orderly shutdown."""
    sock = ws.sock
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    ws.sock = None
    ws.connected = False


def leave_mid_message(ws: websocket.WebSocket) -> None:
    """Write the first half of a text frame (header included), then end the connection (FIN)."""
    frame = websocket.ABNF.create_frame(json.dumps({"message": "x" * 200}), websocket.ABNF.OPCODE_TEXT)
    data = frame.format()
    sock = ws.sock
    if sock is not None:
        sock.sendall(data[: len(data) // 2])
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    ws.sock = None
    ws.connected = False


def leave_cleanly(ws: websocket.WebSocket, timeout: float = 2.0) -> None:
    """The close handshake: a close frame, then the server's, then the socket's end.

    Not ``ws.close()``: its bare ``except:`` swallows the GreenletExit with which Locust stops a
    user, and a user stopped inside it would go on running sessions after the end of the run.
    """
    ws.send_close()
    ws.settimeout(timeout)
    try:
        while ws.recv_frame().opcode != websocket.ABNF.OPCODE_CLOSE:
            pass
    except (websocket.WebSocketConnectionClosedException, websocket.WebSocketTimeoutException, OSError):
        pass  # the server ended the connection without its close frame, or too late
    finally:
        ws.shutdown()


LEAVES = {"clean": leave_cleanly, "reset": leave_abruptly, "mid-message": leave_mid_message}


class SoakChurnUser(WebSocketUser):
    """Chat sessions, one after another; each ends one of the three ways."""

    path_label = names.CHAT_PATH_LABEL
    wait_time = between(0.0, 1.0)  # between two sessions

    def on_start(self) -> None:
        super().on_start()
        self.soak: SoakSettings = soak_settings(self.environment.parsed_options)
        self.member_id = f"soak-{secrets.token_hex(4)}"
        self.seq = 0
        self.room = ""

    def ws_path(self) -> str:
        return f"/ws/chat/{self.room}/?name={self.member_id}"

    @task
    def session(self) -> None:
        soak = self.soak
        self.room = soak_room(time.time(), soak.room_lifetime, random.randrange(soak.rooms))  # noqa: S311
        started = time.perf_counter()
        if not self.connect_once():
            gevent.sleep(self.backoff.next_delay())
            return
        self.backoff.reset()
        how = random.choices(list(soak.leaves), weights=list(soak.leaves.values()))[0]  # noqa: S311
        try:
            self._wait_for(lambda frame: frame.get("type") == "chat.history", names.SOAK_JOIN, started)
            for _ in range(soak.messages):
                self._send_and_wait_for_copy()
                gevent.sleep(soak.message_interval)
            self._idle(random.uniform(0.5, 1.5) * soak.idle)  # noqa: S311
        except (SocketClosedError, AckTimeoutError, *SOCKET_ERRORS) as exc:
            self.drop(exc)
            return
        ws, self.ws = self.ws, None
        if ws is None:
            return
        try:
            LEAVES[how](ws)
        except SOCKET_ERRORS as exc:
            ws.shutdown()
            self.fire(names.soak_leave(how), ms_since(started), exception=describe(exc))
            return
        self.fire(names.soak_leave(how), ms_since(started))

    def _send_and_wait_for_copy(self) -> None:
        self.seq += 1
        text = f"{self.member_id} {self.seq}"
        sent = time.perf_counter()
        self.send_text(json.dumps({"message": text}))
        self._wait_for(
            lambda frame: frame.get("type") == "chat.message" and frame.get("message") == text,
            names.SOAK_ACK,
            sent,
        )

    def _wait_for(self, wanted: Any, row: str, started: float) -> None:
        """Read frames until one is ``wanted``; report the time since ``started`` as ``row``."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timeout = AckTimeoutError(f"nothing within {REPLY_TIMEOUT:g} s")
                self.fire(row, ms_since(started), exception=timeout)
                raise timeout
            try:
                text = self.receive_text(timeout=left)
            except websocket.WebSocketTimeoutException:
                continue
            frame = self._frame(text)
            if frame is not None and wanted(frame):
                self.fire(row, ms_since(started), len(text))
                return

    def _idle(self, seconds: float) -> None:
        """Stay in the room ``seconds``, reading what it carries (others' messages, heartbeats)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._frame(self.receive_text(timeout=left))
            except websocket.WebSocketTimeoutException:
                return

    def _frame(self, text: str) -> dict[str, Any] | None:
        try:
            frame = parse_frame(text)
        except UnexpectedFrameError as exc:
            self.fire(names.CHAT_ERROR, 0, len(text), exception=exc)
            return None
        error = server_error(frame)
        if error is not None:
            self.fire(names.CHAT_ERROR, 0, len(text), exception=error)
            return None
        return frame


class SoakHttpUser(FastHttpUser):
    """Every HTTP endpoint of the stack in turn; exactly ``--soak-http-users`` of them."""

    host = DEFAULT_BASE_URL
    fixed_count = 2
    wait_time = between(0.2, 0.6)

    def on_start(self) -> None:
        self.next_path = random.randrange(len(names.SOAK_HTTP_PATHS))  # noqa: S311

    @task
    def request(self) -> None:
        path = names.SOAK_HTTP_PATHS[self.next_path]
        self.next_path = (self.next_path + 1) % len(names.SOAK_HTTP_PATHS)
        with self.client.get(path, name=path, allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")


def _set_http_user_count(environment: Environment, **_kwargs: Any) -> None:
    # Set on the master (which dispatches fixed_count users exactly) at init and at every start.
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        SoakHttpUser.fixed_count = soak_settings(environment.parsed_options).http_users
    except ValueError:
        return  # reported by validate_at_init


events.init.add_listener(_set_http_user_count)
events.test_start.add_listener(_set_http_user_count)
