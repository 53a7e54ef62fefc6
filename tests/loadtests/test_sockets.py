"""loadtests/sockets: the step logic, and exact counts against a chat stand-in on 127.0.0.1."""

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http import HTTPStatus
from typing import TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtests.sockets import __main__ as cli
from loadtests.sockets.observe import OutOfMemoryWatch, nginx_errors, usage_by_component
from loadtests.sockets.plan import (
    Plan,
    PlanError,
    Step,
    bytes_per_socket,
    parse_steps,
    source_addresses,
    summary,
)
from loadtests.sockets.run import CapacityRun
from tests.loadtests.chat_server import Broadcaster


@pytest.mark.parametrize("text", ["", "10,5", "0,5", "5,5", "a,b"])
def test_bad_steps_are_refused(text):
    with pytest.raises(PlanError, match="--steps"):
        parse_steps(text)


def test_sources_stay_on_the_loopback_range():
    assert source_addresses("127.0.0.1", 3) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    with pytest.raises(PlanError, match="leave the loopback range"):
        source_addresses("127.255.255.255", 2)
    with pytest.raises(PlanError, match="IPv4"):
        source_addresses("localhost", 1)


def test_processes_and_sources_follow_the_largest_step():
    plan = Plan("http://127.0.0.1:1", steps=(2000, 20000))
    assert plan.processes == 3  # 8,000 sockets at most per process: under the 20,000 open files
    assert plan.sources == ["127.0.0.1", "127.0.0.2"]  # 10,000 per source address


def test_a_step_holds_only_when_nothing_failed():
    assert Step(100, open=100, delivered=100).judge().held
    refused = Step(100, open=90, delivered=90, handshake_failures=Counter({"HTTP 503": 10})).judge()
    assert not refused.held and refused.why == "handshakes failed: HTTP 503 x10"
    dropped = Step(100, open=99, delivered=99, dropped=Counter({"closed 1006": 1})).judge()
    assert dropped.why == "sockets dropped: closed 1006 x1"
    killed = Step(100, open=100, delivered=100, out_of_memory=Counter({"p_app_2": 2})).judge()
    assert killed.why == "out of memory (a process killed at its container's limit): p_app_2 x2"
    missed = Step(100, open=100, delivered=97).judge()
    assert missed.why == "3 of 100 sockets missed the broadcast"
    assert summary([Step(10, open=10, delivered=10).judge(), missed]) == {
        "held": 10,
        "stopped": "100 sockets: 3 of 100 sockets missed the broadcast",
    }


def test_the_out_of_memory_watch_counts_each_containers_kills_since_it_was_last_asked():
    # A stand-in for `docker events`: two kills in one container, one in another, then silence.
    events = ["sh", "-c", "echo p_app_2; echo p_app_2; echo p_nginx_1; exec sleep 30"]
    with OutOfMemoryWatch("p", argv=events) as watch:
        deadline = time.monotonic() + 10
        kills: Counter[str] = Counter()
        while sum(kills.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            kills += watch.take()
        assert kills == Counter({"p_app_2": 2, "p_nginx_1": 1})
        assert watch.take() == Counter()  # each kill is counted once
    assert watch.process is not None and watch.process.poll() is not None  # stopped with the run


def test_nginx_errors_count_each_cause_once_without_time_process_or_client():
    log = "\n".join([
        '{"time":"2026-12-04T00:26:13+00:00","status":101}',  # the access log: skipped
        "2026/12/04 00:26:13 [alert] 48#48: 19000 worker_connections are not enough",
        "2026/12/04 00:26:14 [alert] 49#49: 19000 worker_connections are not enough",
        "2026/12/04 00:26:14 [crit] 49#49: *812 accept4() failed (24: Too many open files)",
        "2026/12/04 00:26:15 [error] 50#50: *36397 recv() failed (104: Connection reset by peer) while "
        'proxying upgraded connection, client: 172.18.0.1, server: , request: "GET /ws/chat/x/ HTTP/1.1"',
        "entrypoint: upstream app (app): 10.0.0.2; reloading",
    ])  # fmt: skip
    assert nginx_errors(log) == {
        "[alert] 19000 worker_connections are not enough": 2,
        "[crit] accept4() failed (24: Too many open files)": 1,
        "[error] recv() failed (104: Connection reset by peer) while proxying upgraded connection": 1,
    }


def test_memory_per_socket_is_each_components_growth_and_cpu_is_summed_by_component():
    baseline = {"app": {"a_app_1": 100, "a_app_2": 100}, "nginx": {"a_nginx_1": 50}}
    now = {"app": {"a_app_1": 1100, "a_app_2": 1100}, "nginx": {"a_nginx_1": 250}}
    assert bytes_per_socket(baseline, now, 100) == {"app": 20, "nginx": 2}
    stats = "".join(
        f"{name}\t{size} / 1GiB\t{cpu}%\n"
        for name, size, cpu in [("p_app_1", "10MiB", "50.5"), ("p_ws_1", "1MiB", "2.25"),
                                ("p_nginx_1", "2MiB", "7.0"), ("p_redis_1", "3MiB", "0.1"),
                                ("q_app_1", "9MiB", "99.0")]
    ) + "\n"  # fmt: skip
    found = usage_by_component("p", lambda: stats)
    assert found.cpu_percent == {"app": 52.8, "nginx": 7.0, "redis": 0.1}  # q_app_1 is another stack's
    assert found.memory == {
        "app": {"p_app_1": 10 << 20, "p_ws_1": 1 << 20},
        "nginx": {"p_nginx_1": 2 << 20},
        "redis": {"p_redis_1": 3 << 20},
    }


class ChatInAThread:
    """The chat stand-in, served from a thread of its own (the run blocks this one), refusing
    handshakes past ``limit`` with HTTP 503, and noting the address each socket came from."""

    def __init__(self, limit: int | None = None) -> None:
        self.broadcaster = Broadcaster()
        self.limit = limit
        self.accepted = 0
        self.sources: Counter[str] = Counter()
        self.ready = threading.Event()
        self.port = 0

    def refuse_past_the_limit(self, connection: ServerConnection, request: object) -> object:
        if self.limit is not None and self.accepted >= self.limit:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "full\n")
        self.accepted += 1
        self.sources[connection.remote_address[0]] += 1
        return None

    async def handler(self, ws: ServerConnection) -> None:
        await self.broadcaster.handler(ws)

    async def serve(self, stop: asyncio.Event) -> None:
        async with serve(self.handler, "127.0.0.1", 0, process_request=self.refuse_past_the_limit) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await stop.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


C = TypeVar("C", bound=ChatInAThread)


@contextlib.contextmanager
def served(chat: C) -> Iterator[C]:
    """``chat`` serving from a thread of its own, until the block ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(chat.serve(stop),), daemon=True)
    thread.start()
    assert chat.ready.wait(10)
    try:
        yield chat
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@pytest.fixture
def chat(request: pytest.FixtureRequest) -> Iterator[ChatInAThread]:
    with served(ChatInAThread(getattr(request, "param", None))) as chat:
        yield chat


def test_every_socket_is_held_and_gets_every_broadcast(chat):
    # Two processes and three source addresses, as 20,000 sockets would take, at a small scale.
    plan = Plan(
        chat.url, steps=(10, 25), rate=200, settle=0.2, delivery_timeout=10, per_process=15, per_source=9
    )
    found = CapacityRun(plan).run()
    assert found["processes"] == 2 and found["sources"] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [(s["open"], s["delivered"], s["held"]) for s in found["steps"]] == [
        (10, 10, True),
        (25, 25, True),
    ]
    assert found["held"] == 25 and found["stopped"] == "every step held"
    # The broadcasts' socket comes on top of the held ones, opened once, from the first address.
    assert set(chat.sources) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert sum(chat.sources.values()) == 25 + 1


@pytest.mark.parametrize("chat", [11], indirect=True)
def test_the_run_stops_at_the_first_refusal_and_says_so(chat):
    plan = Plan(chat.url, steps=(5, 10, 20, 40), rate=200, settle=0.1, delivery_timeout=5)
    found = CapacityRun(plan).run()
    # 5 and 10 held (11 accepted: the 10 and the broadcasts' own socket, opened first)...
    assert [s["held"] for s in found["steps"]] == [True, True, False]
    # ... and the step of 20 found the limit.
    failed = found["steps"][-1]
    assert failed["handshake_failures"] == {"HTTP 503": 10}
    assert found["held"] == 10 and found["stopped"].startswith("20 sockets: handshakes failed: HTTP 503 x10")


class ChatRefusingInItsFirstFrame(ChatInAThread):
    """Accepts every handshake, but past ``frames`` sockets answers with the app's error frame
    instead of the history, as the app does when its history read misses its deadline."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames
        self.answered = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.answered += 1
        if self.answered > self.frames:
            await ws.send(json.dumps({"type": "error", "code": "storage_unavailable", "detail": "later"}))
            await ws.close(1013)
            return
        await super().handler(ws)


def test_an_error_frame_instead_of_the_history_is_named_by_its_code():
    with served(ChatRefusingInItsFirstFrame(frames=8)) as chat:
        found = CapacityRun(Plan(chat.url, steps=(5, 10), rate=200, settle=0.1, delivery_timeout=5)).run()
    # 8 answered: the broadcasts' socket and 7 of the step of 10; 3 got the error frame.
    assert found["steps"][-1]["handshake_failures"] == {"first frame error storage_unavailable": 3}


class ChatDroppingTheFirstSocket(ChatInAThread):
    """Drops the first socket, the broadcasts' own, without a close frame once ``after`` sockets
    came, as when the server process that held it is killed."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.members: list[ServerConnection] = []

    async def handler(self, ws: ServerConnection) -> None:
        self.members.append(ws)
        if len(self.members) == self.after:
            self.members[0].transport.abort()
        await super().handler(ws)


def test_a_broadcast_that_cannot_be_sent_fails_its_step_and_the_run_ends_with_its_counts():
    with served(ChatDroppingTheFirstSocket(after=1 + 5 + 5)) as chat:
        found = CapacityRun(Plan(chat.url, steps=(5, 10, 20), rate=200, settle=0.3, delivery_timeout=5)).run()
    assert [s["held"] for s in found["steps"]] == [True, False]
    failed = found["steps"][-1]
    assert failed["open"] == 10 and failed["missing"] == 0  # no broadcast went out: none counts as missed
    assert failed["why"].startswith("the broadcast could not be sent: ConnectionClosed")
    assert found["held"] == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "5,1"], "--steps must rise"),
        (["--rate", "0"], "--rate must be > 0"),
        (["--settle", "-1"], "--settle must be >= 0"),
    ],
)
def test_the_command_line_refuses_bad_settings(capsys, argv, message):
    assert cli.main(["--host", "http://127.0.0.1:1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_stack_that_does_not_answer_is_named(capsys):
    assert cli.main(["--host", "http://127.0.0.1:1", "--steps", "2"]) == 1
    assert "sockets: http://127.0.0.1:1 does not answer: connection refused" in capsys.readouterr().err
