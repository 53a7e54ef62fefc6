"""A Locust ``User`` for plain WebSockets (Locust's own WebSocket user speaks Socket.IO only).

Built on ``websocket-client``, whose blocking sockets become cooperative under the gevent
monkey-patching Locust does on import, so thousands of users fit in one process. Every handshake,
round trip and failure is fired as a Locust request event (request type ``WS``), so it shows up in
the stats, the CSV files and the web UI next to HTTP requests.

Two ways to use it:

- request/response (echo): a task calls ``ensure_connected()``, ``send_text()`` and
  ``receive_text()`` itself;
- push (chat, idle sockets): ``start_receiver()`` runs a greenlet that keeps the socket
  connected and hands every text frame to ``on_text()``, while tasks only send.

When the socket drops, the drop is reported as a failure (``disconnect <path>``) and the user
reconnects with exponential backoff. Nothing here loops on its own: every loop runs inside the
user's greenlets, which Locust kills when the run stops (``-t``, ``--max-run-time``, the web UI).
"""

import logging
import time
from typing import Any

import gevent
import websocket
from locust import User
from locust.exception import StopUser

from loadtests.lib import names
from loadtests.lib.backoff import Backoff
from loadtests.lib.probe import close_status, is_heartbeat
from loadtests.lib.settings import WsSettings, ws_settings
from loadtests.lib.urls import DEFAULT_BASE_URL, join_url

logger = logging.getLogger(__name__)

# What a dead or refused socket raises: websocket-client's own errors, and the OS's.
SOCKET_ERRORS = (websocket.WebSocketException, OSError)


class SocketClosedError(Exception):
    """The server closed the socket (close frame); carries its close code and reason."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed by server: code={code} {reason}".rstrip())
        self.code = code
        self.reason = reason


def describe(exc: BaseException) -> Exception:
    """A failure as Locust should group it: a refused handshake by its status code."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return ConnectionRefusedError(f"handshake refused: HTTP {exc.status_code}")
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(repr(exc))


class WebSocketUser(User):
    abstract = True
    host = DEFAULT_BASE_URL

    # The row label of this user's sockets; chat uses one label for every room.
    path_label = "/"

    # A socket that lived this long was healthy: its drop starts the backoff from the beginning.
    stable_after = 10.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws: websocket.WebSocket | None = None
        self.ws_config: WsSettings | None = None
        self.backoff = Backoff()
        self.connected_at = 0.0  # perf_counter() at the start of the current socket's handshake
        self._delay_before_connect = 0.0
        self._stopping = False
        self._receiver: gevent.Greenlet | None = None

    def on_start(self) -> None:
        # Read here, not in __init__: the web UI may change the options between two runs.
        try:
            self.ws_config = ws_settings(self.host, self.environment.parsed_options)
        except ValueError as exc:
            logger.error("bad WebSocket settings: %s", exc)
            raise StopUser from exc

    # --- what subclasses define ------------------------------------------------------------------

    def ws_path(self) -> str:
        """Path (with query) of the socket to open; called before every (re)connect."""
        return self.path_label

    def on_connected(self) -> None:
        """Called after each successful handshake."""

    def on_text(self, text: str) -> None:
        """Called by the receiver greenlet with each text frame."""

    # --- reporting ---------------------------------------------------------------------------------

    def fire(
        self, name: str, response_time: float, length: int = 0, exception: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type=names.WS,
            name=name,
            response_time=response_time,
            response_length=length,
            response=None,
            context=self.context(),
            exception=exception,
        )

    # --- connection lifecycle ------------------------------------------------------------------------

    def connect_once(self) -> bool:
        """One handshake attempt, reported as ``connect <path>`` (failures included)."""
        assert self.ws_config is not None, "on_start() sets ws_config"
        url = join_url(self.ws_config.base, self.ws_path())
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        started = time.perf_counter()
        try:
            ws.connect(url, origin=self.ws_config.origin, timeout=self.ws_config.timeout)
        except SOCKET_ERRORS as exc:
            ws.shutdown()
            self.fire(names.ws_connect(self.path_label), ms_since(started), exception=describe(exc))
            return False
        self.fire(names.ws_connect(self.path_label), ms_since(started))
        self.ws = ws
        self.connected_at = started
        self.on_connected()
        return True

    def ensure_connected(self) -> websocket.WebSocket:
        """The open socket, reconnecting with backoff first if there is none."""
        while self.ws is None:
            if self._delay_before_connect:
                gevent.sleep(self._delay_before_connect)
            self._delay_before_connect = 0.0 if self.connect_once() else self.backoff.next_delay()
        return self.ws

    def drop(self, reason: BaseException | None = None) -> None:
        """Forget the socket; an unexpected drop is a failure (nothing is reported while stopping)."""
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.shutdown()
        if reason is None or self._stopping:
            return
        self.fire(names.ws_disconnect(self.path_label), 0, exception=describe(reason))
        # Back off before the next handshake even though the last one worked: a server closing
        # with 1013 ("try again later") right after accepting must not get a reconnect loop.
        if time.perf_counter() - self.connected_at >= self.stable_after:
            self.backoff.reset()
        self._delay_before_connect = self.backoff.next_delay()

    # --- frames ------------------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        if self.ws is None:
            raise websocket.WebSocketConnectionClosedException("not connected")
        self.ws.send(text)

    def receive_text(self, timeout: float | None) -> str:
        """The next text frame that is not an app heartbeat. Pings are answered by websocket-client
        itself; a close frame raises ``SocketClosedError``; ``timeout`` None waits for as long as
        the user lives.

        Heartbeat frames (``{"type": "heartbeat"}``, sent by the app where the server has no
        WebSocket ping: Granian, Gunicorn's ASGI worker) answer nothing: taken as the reply to a
        request, they would put every later reply one behind."""
        ws = self.ws
        if ws is None:
            raise websocket.WebSocketConnectionClosedException("not connected")
        ws.settimeout(timeout)
        while True:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
                if not is_heartbeat(text):
                    return text
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise SocketClosedError(*close_status(data))
            # A binary frame: the app never sends one; skip it rather than fail the socket.

    # --- push mode ------------------------------------------------------------------------------------

    def start_receiver(self) -> None:
        """Start (or restart, if it ended) the greenlet that owns the connection."""
        if self._receiver is None or self._receiver.dead:
            self._receiver = gevent.spawn(self._receive_forever)

    def _receive_forever(self) -> None:
        # Ends only when on_stop kills this greenlet.
        while True:
            self.ensure_connected()
            try:
                while True:
                    self.on_text(self.receive_text(timeout=None))
            except (SocketClosedError, *SOCKET_ERRORS) as exc:
                self.drop(exc)
            except Exception as exc:  # a bug in on_text: report it, reconnect, keep the user alive
                logger.exception("receiver of %s failed", self.path_label)
                self.drop(exc)

    def on_stop(self) -> None:
        self._stopping = True
        if self._receiver is not None:
            self._receiver.kill(block=True, timeout=2)
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)  # a clean close, so the server logs no abnormal disconnects
            except SOCKET_ERRORS:
                ws.shutdown()


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
