"""Scenario ``echo``: WebSocket round trips on ``/ws/echo/``.

Each user keeps one socket and sends ``{"message": <probe>}`` every ``--echo-interval`` seconds
(constant pacing, below the server's per-connection rate limit); the reply must carry the same
probe. Rows: ``connect /ws/echo/`` (handshakes), ``echo round trip``, ``disconnect /ws/echo/``.
"""

import json
import time

from locust import constant_pacing, task

from loadtests.lib import names, options
from loadtests.lib.probe import (
    Probe,
    UnexpectedFrameError,
    decode_probe,
    encode_probe,
    parse_frame,
    server_error,
)
from loadtests.lib.settings import echo_interval, ws_settings
from loadtests.lib.wsuser import SOCKET_ERRORS, SocketClosedError, WebSocketUser, ms_since

options.register()
options.validate_at_init(
    lambda environment: (
        echo_interval(environment.parsed_options),
        ws_settings(environment.host, environment.parsed_options),
    )
)


class EchoUser(WebSocketUser):
    path_label = names.ECHO_PATH

    def on_start(self) -> None:
        super().on_start()
        self._pacing = constant_pacing(echo_interval(self.environment.parsed_options))
        self.sender_id = f"echo-{id(self):x}"
        self.seq = 0
        self.ensure_connected()

    def wait_time(self) -> float:
        return self._pacing(self)

    @task
    def round_trip(self) -> None:
        self.ensure_connected()
        assert self.ws_config is not None
        self.seq += 1
        sent = Probe(sender=self.sender_id, seq=self.seq, sent_at=time.time())
        text = json.dumps({"message": encode_probe(sent)})
        started = time.perf_counter()
        try:
            self.send_text(text)
            reply = self.receive_text(timeout=self.ws_config.timeout)
        except (SocketClosedError, *SOCKET_ERRORS) as exc:
            # A timeout also drops the socket: a late reply would otherwise be read as the answer
            # to the next message.
            self.fire(names.ECHO_ROUND_TRIP, ms_since(started), exception=exc)
            self.drop(exc)
            return
        elapsed = ms_since(started)
        self.fire(names.ECHO_ROUND_TRIP, elapsed, len(reply), exception=_check_reply(reply, sent))


def _check_reply(reply: str, sent: Probe) -> Exception | None:
    try:
        frame = parse_frame(reply)
    except UnexpectedFrameError as exc:
        return exc
    error = server_error(frame)
    if error is not None:
        return error
    if decode_probe(frame.get("message")) != sent:
        return UnexpectedFrameError(f"echo does not match what was sent: {reply[:120]!r}")
    return None
