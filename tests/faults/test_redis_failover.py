"""The Redis primary killed under chat load, on the stack with Sentinel (``make up REDIS_HA=1``).

Chat clients in several rooms, with sockets on both app replicas, each send their own numbered
messages one at a time (the next once the last is settled) and read everyone else's. The primary is
killed (SIGKILL: it answers nothing more, not even a reset). Then:

- the sentinels promote the replica;
- every socket open at the kill either gets ``layer_unavailable`` and a 1013 close, or stays open
  and goes on receiving the room's messages: none is left silent;
- the clients reconnect, and each one hears every other one of its room again, within
  RECOVERY_LIMIT seconds of the kill (the figure the README quotes);
- every acknowledged message is in PostgreSQL, and none went unanswered;
- /readyz answers 503 naming the channel layer while it is down (when a probe falls in that time),
  and 200 after;
- the old primary, started again, is a replica of the new one.

One variant by default (REDIS_HA_VARIANTS="..." or "all" for more); a stack of its own, so it runs
beside the other fault tests' stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, WebSocketException

from stackctl import free_port, selected_variants
from stackctl.testing import require_docker, running
from tests.faults.clients import InBackground, close_code, group_key, join, unique_room
from tests.faults.conftest import REPORT
from tests.faults.stack import HEALTHY_TIMEOUT, READYZ_TIMEOUT, STACK_ENV, TEST_TIMEOUT, Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

PROJECT = "rtd-faults-redis-ha"  # beside the other fault tests' rtd-faults
REPLICAS = 2
# One server process per replica: a room's memberships in Redis (one per process holding its
# sockets) then tell how many replicas hold its sockets.
ENV = {**STACK_ENV, "WEB_CONCURRENCY": "1"}
MASTER = "mymaster"  # compose.redis-ha.yaml's default REDIS_SENTINEL_MASTER

ROOMS = 3
CLIENTS_PER_ROOM = 3  # at least; more join a room until its sockets are on both replicas
MAX_CLIENTS_PER_ROOM = 10
PAUSE = 0.3  # seconds between two messages of one client
ACK_TIMEOUT = 30.0  # a message neither acknowledged nor refused by then was dropped silently
CLOSE_TIMEOUT = 15.0  # seconds for the close that follows an error frame
LIFETIME = 600.0  # seconds a client runs at most
MAX_MESSAGES = 2000  # per client
# The requirement: chat works again within 15 s of the primary's death. Sentinel needs
# SENTINEL_DOWN_AFTER_MS (2 s) and a vote; a read waiting on the dead primary fails within
# REDIS_SOCKET_TIMEOUT (8 s with Sentinel); then the client reconnects.
RECOVERY_LIMIT = 15.0
OBSERVE = 40.0  # seconds of traffic after the kill, before the clients stop


def failover_variants() -> list[str]:
    return selected_variants("REDIS_HA_VARIANTS", "uvicorn")


# --- Clients ------------------------------------------------------------------------------------


@dataclass
class Session:
    """One connection of a client: when it was open, what errors it got, how it ended."""

    opened: float  # time.monotonic()
    closed: float | None = None  # by the server (or the connection broke); None: open until the end
    close_code: int | None = None
    errors: list[str] = field(default_factory=list)
    heard: list[tuple[float, str]] = field(default_factory=list)  # others' messages: (when, text)

    def open_at(self, moment: float) -> bool:
        return self.opened < moment and (self.closed is None or self.closed > moment)


@dataclass
class ClientRecord:
    name: str
    room: str
    sent: list[tuple[float, str]] = field(default_factory=list)  # (when, text)
    acked: dict[str, int] = field(default_factory=dict)  # text -> database id
    failed: dict[str, str] = field(default_factory=dict)  # text -> how its failure was reported
    silent: list[str] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    refused: int = 0  # handshakes that failed, or were answered with an error and a close


class ChatClient:
    """A chat member that sends ``<name>:<n>`` one at a time and records everything it hears.

    It waits for ``start`` before it connects (the test spreads each room over both replicas), and
    reconnects like the chat page (0.25 s, doubling to 5 s) after a close.
    """

    def __init__(self, stack: Stack, room: str, name: str) -> None:
        self.stack = stack
        self.record = ClientRecord(name, room)
        self.start = threading.Event()
        self.connected = threading.Event()
        self._sequence = 0
        self._pending: dict[str, asyncio.Future[bool]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not self.start.is_set():
            if stop.is_set():
                return
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIFETIME
        attempt = 0
        while not stop.is_set() and self._sequence < MAX_MESSAGES and loop.time() < deadline:
            try:
                ws, _ = await join(self.stack.ws_url, self.stack.base_url, self.record.room, self.record.name)
            except (OSError, WebSocketException, TimeoutError, AssertionError):
                self.record.refused += 1
                attempt += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            attempt = 0
            session = Session(time.monotonic())
            self.record.sessions.append(session)
            self.connected.set()
            async with ws:
                reader = asyncio.ensure_future(self._read(ws, session))
                await self._send_until_closed(ws, reader, stop)
                reader.cancel()  # the client closes (the end of the test, or a silent drop)
            await asyncio.sleep(0.25)

    async def _send_until_closed(self, ws: Any, reader: asyncio.Future[None], stop: asyncio.Event) -> None:
        while not stop.is_set() and not reader.done() and self._sequence < MAX_MESSAGES:
            text = f"{self.record.name}:{self._sequence}"
            self._sequence += 1
            settled = self._pending[text] = asyncio.get_running_loop().create_future()
            self.record.sent.append((time.monotonic(), text))
            try:
                await ws.send(json.dumps({"message": text}))
            except ConnectionClosed:
                pass  # the reader records the close, and settles the message as failed
            else:
                first = asyncio.FIRST_COMPLETED
                await asyncio.wait({settled, reader}, timeout=ACK_TIMEOUT, return_when=first)
            if not settled.done():
                await asyncio.sleep(0.05)  # the reader may be about to settle it
            self._pending.pop(text, None)
            if not settled.done():
                if reader.done() or ws.state.name != "OPEN":
                    self.record.failed.setdefault(text, "closed before an answer")
                else:
                    self.record.silent.append(text)
                return
            if not settled.result():
                # Refused: the server's close follows its error frame (read on until it comes).
                await asyncio.wait({reader}, timeout=CLOSE_TIMEOUT)
                return
            await asyncio.sleep(PAUSE)

    def _settle(self, text: str | None, how: str | None) -> None:
        """``how`` None: acknowledged. Else refused (reported by an error frame)."""
        if text is None:
            return
        future = self._pending.get(text)
        if future is not None and not future.done():
            future.set_result(how is None or how == "storage_unavailable")

    async def _read(self, ws: Any, session: Session) -> None:
        try:
            while True:
                frame = json.loads(await ws.recv())
                kind = frame.get("type")
                if kind == "chat.message":
                    text = frame["message"]
                    if text in self._pending:
                        self.record.acked[text] = frame["id"]
                        self._settle(text, None)
                    elif not text.startswith(self.record.name + ":"):
                        session.heard.append((time.monotonic(), text))
                elif kind == "error":
                    session.errors.append(frame["code"])
                    for text, future in self._pending.items():
                        if not future.done():
                            self.record.failed[text] = frame["code"]
                            self._settle(text, frame["code"])
        except ConnectionClosed as exc:
            session.closed = time.monotonic()
            session.close_code = close_code(exc)
            for text, future in self._pending.items():
                if not future.done():
                    self.record.failed.setdefault(text, f"closed {session.close_code}")
                    future.set_result(False)


class Probe:
    """Polls /readyz and the sentinels' answer for the primary, with times, until stopped."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.readyz: list[tuple[float, int, dict[str, Any]]] = []  # (sent, status, body)
        self.primary: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=READYZ_TIMEOUT + 30)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.stack.base_url, timeout=READYZ_TIMEOUT) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.get("/readyz")
                    answer = (
                        response.status_code,
                        response.json() if response.status_code in (200, 503) else {},
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    answer = (0, {"error": repr(exc)})
                self.readyz.append((sent, *answer))
                self.primary.append((time.monotonic(), primary_address(self.stack, "sentinel-1")))
                self._stop.wait(0.25)


# --- The stack with Sentinel -----------------------------------------------------------------------


def address(stack: Stack, service: str) -> str:
    """The container's address on the stack's backend network."""
    networks = stack.inspect(stack.container(service))["NetworkSettings"]["Networks"]
    return networks[f"{stack.project}_backend"]["IPAddress"]


def primary_address(stack: Stack, sentinel: str) -> str:
    try:
        answer = stack.exec(
            sentinel, "redis-cli", "-p", "26379", "SENTINEL", "get-master-addr-by-name", MASTER
        )
    except Exception as exc:  # a sentinel that does not answer is recorded, not raised
        return f"error: {exc}"
    return answer.split()[0] if answer.split() else ""


def replication(stack: Stack, service: str) -> dict[str, str]:
    """INFO replication of a Redis member, as a dict."""
    out = stack.exec(service, "redis-cli", "INFO", "replication")
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def fresh_memberships(stack: Stack, service: str, room: str, since_epoch: float) -> int:
    """Memberships of a room's group joined or renewed since ``since_epoch`` (one per process)."""
    out = stack.exec(service, "redis-cli", "ZRANGE", group_key(room), "0", "-1", "WITHSCORES").split()
    return sum(float(out[i + 1]) >= since_epoch for i in range(0, len(out), 2))


@pytest.fixture(scope="module", params=failover_variants())
def ha_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    require_docker("fault tests")
    stack = Stack(
        server=request.param,
        project=PROJECT,
        http_port=free_port(),
        replicas=REPLICAS,
        env=ENV,
        redis_ha=True,
    )
    with running(stack):
        stack.wait_serving()
        yield stack


# --- The scenario ----------------------------------------------------------------------------------


@dataclass
class Failover:
    variant: str
    # time.monotonic() right before `docker kill` was run and right after it returned: the primary
    # died in between. Sockets open at the first moment lived through the kill; messages sent after
    # the second cannot have gone through the old primary.
    kill_started: float
    killed_at: float
    old_primary: str  # addresses
    new_primary: str
    clients: list[ClientRecord]
    readyz: list[tuple[float, int, dict[str, Any]]]
    primary_seen: list[tuple[float, str]]
    fresh_members: dict[str, int]  # room -> memberships (processes) joined after the kill
    old_primary_back: dict[str, str]  # its INFO replication
    new_primary_replication: dict[str, str]
    stored: dict[int, str]  # id -> body, the test's rooms


def spread_over_both_replicas(stack: Stack, clients: list[ChatClient], room: str) -> list[ChatClient]:
    """Start the room's clients one by one until at least CLIENTS_PER_ROOM run and the room has a
    membership on each replica; the clients it started."""
    started: list[ChatClient] = []
    for client in clients:
        client.start.set()
        assert client.connected.wait(30), f"{client.record.name} did not connect"
        started.append(client)
        if len(started) >= CLIENTS_PER_ROOM and fresh_memberships(stack, "redis", room, 0) == REPLICAS:
            return started
    raise AssertionError(f"{room}: {len(started)} sockets, all on one replica")


@pytest.fixture(scope="module")
def failover(ha_stack: Stack) -> Failover:
    stack = ha_stack
    old_primary, replica = address(stack, "redis"), address(stack, "redis-replica")
    assert primary_address(stack, "sentinel-1") == old_primary
    assert replication(stack, "redis-replica")["role"] == "slave"
    rooms = [unique_room(f"failover{index}") for index in range(ROOMS)]
    clients = [
        ChatClient(stack, room, f"{room}-c{index}") for room in rooms for index in range(MAX_CLIENTS_PER_ROOM)
    ]
    with InBackground(clients, join_timeout=ACK_TIMEOUT + 30):
        running = [
            client
            for room in rooms
            for client in spread_over_both_replicas(
                stack, [c for c in clients if c.record.room == room], room
            )
        ]
        time.sleep(3)  # traffic before the fault
        with Probe(stack) as probe:
            time.sleep(1)
            victim = stack.container("redis")
            kill_epoch = time.time()
            kill_started = time.monotonic()
            stack.docker("kill", "--signal", "KILL", victim)
            killed_at = time.monotonic()
            time.sleep(OBSERVE)
        new_primary = primary_address(stack, "sentinel-2")
        fresh = {room: fresh_memberships(stack, "redis-replica", room, kill_epoch) for room in rooms}
    stack.docker("start", victim)
    stack.wait_container_healthy(victim, HEALTHY_TIMEOUT)
    # Until it is in sync with its primary, or a minute has passed: the test below says which.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: replication(stack, "redis").get("master_link_status") == "up", 60, "in sync")
    room_list = ", ".join(f"'{room}'" for room in rooms)
    rows = stack.sql(f"SELECT id, body FROM chat_message WHERE room IN ({room_list})")
    return Failover(
        variant=stack.server,
        kill_started=kill_started,
        killed_at=killed_at,
        old_primary=old_primary,
        new_primary=new_primary if new_primary == replica else f"{new_primary} (not the replica {replica})",
        clients=[client.record for client in running],
        readyz=probe.readyz,
        primary_seen=probe.primary,
        fresh_members=fresh,
        old_primary_back=replication(stack, "redis"),
        new_primary_replication=replication(stack, "redis-replica"),
        stored={int(message_id): body for message_id, body in rows},
    )


def sent_after(record: ClientRecord, moment: float) -> set[str]:
    return {text for when, text in record.sent if when > moment}


def heard_again_at(failover: Failover) -> float:
    """Seconds after the kill at which every client had heard every other client of its room again,
    in a message sent after the kill (so through the new primary)."""
    latest = 0.0
    for listener in failover.clients:
        heard = sorted(item for session in listener.sessions for item in session.heard)
        for speaker in failover.clients:
            if speaker.room != listener.room or speaker is listener:
                continue
            later = sent_after(speaker, failover.killed_at)
            first = next((when for when, text in heard if text in later), None)
            assert first is not None, f"{listener.name} never heard {speaker.name} after the kill"
            latest = max(latest, first - failover.kill_started)
    return latest


def promoted_at(failover: Failover) -> float | None:
    return next(
        (
            when - failover.kill_started
            for when, seen in failover.primary_seen
            if seen == failover.new_primary
        ),
        None,
    )


# --- The checks --------------------------------------------------------------------------------------


def test_the_sentinels_promote_the_replica(failover: Failover) -> None:
    assert failover.new_primary not in ("", failover.old_primary), failover.new_primary
    assert "not the replica" not in failover.new_primary
    assert failover.new_primary_replication["role"] == "master"
    assert promoted_at(failover) is not None


def socket_outcomes(failover: Failover) -> list[tuple[str, str]]:
    """Each socket open at the kill: told (layer_unavailable, then 1013), or still served after it."""
    outcomes = []
    for client in failover.clients:
        for session in (s for s in client.sessions if s.open_at(failover.kill_started)):
            if session.closed is None:
                served = any(when > failover.killed_at for when, _ in session.heard)
                outcome = "kept working" if served else f"left silent after {session.errors}"
            elif session.close_code == 1013 and session.errors[:1] == ["layer_unavailable"]:
                outcome = "told, then 1013"
            else:
                outcome = f"closed {session.close_code} after {session.errors}"
            outcomes.append((client.name, outcome))
    return outcomes


def test_no_open_socket_is_left_silent(failover: Failover) -> None:
    """Open at the kill: told (layer_unavailable, then 1013), or still served afterwards."""
    outcomes = socket_outcomes(failover)
    REPORT.append(
        {
            "variant": failover.variant,
            "test": "redis failover: sockets open at the kill",
            **Counter(outcome for _, outcome in outcomes),
        }
    )
    assert outcomes, "no socket was open at the kill"
    assert {outcome for _, outcome in outcomes} <= {"kept working", "told, then 1013"}, outcomes


def test_clients_chat_again_across_replicas_soon_after_the_kill(failover: Failover) -> None:
    recovered = heard_again_at(failover)
    REPORT.append(
        {
            "variant": failover.variant,
            "test": "redis failover: timing",
            "promoted_after_s": round(promoted_at(failover) or -1, 1),
            "chat_again_after_s": round(recovered, 1),
            "fresh_memberships": failover.fresh_members,
        }
    )
    assert recovered <= RECOVERY_LIMIT, f"chat worked again only {recovered:.1f} s after the kill"
    # Some room's sockets are on both replicas again, so its messages crossed replicas through the
    # new primary.
    assert max(failover.fresh_members.values()) == REPLICAS, failover.fresh_members


def test_every_acknowledged_message_is_in_postgresql(failover: Failover) -> None:
    acked = {text: message_id for client in failover.clients for text, message_id in client.acked.items()}
    failed = {text: how for client in failover.clients for text, how in client.failed.items()}
    silent = [text for client in failover.clients for text in client.silent]
    missing = {
        text: message_id for text, message_id in acked.items() if failover.stored.get(message_id) != text
    }
    after_kill = set().union(*(sent_after(client, failover.killed_at) for client in failover.clients))
    REPORT.append(
        {
            "variant": failover.variant,
            "test": "redis failover: messages",
            "acknowledged": len(acked),
            "acknowledged_sent_after_the_kill": len(acked.keys() & after_kill),
            "reported_failed": len(failed),
            "silently_dropped": len(silent),
            "acknowledged_missing_in_db": len(missing),
        }
    )
    assert acked and missing == {}, list(missing.items())[:10]
    assert silent == [], silent[:10]
    stored_bodies = set(failover.stored.values())
    assert stored_bodies <= set(acked) | set(failed)  # nothing invented


def test_readyz_follows_the_channel_layer(failover: Failover) -> None:
    """503 naming the channel layer while there is no primary, 200 once there is one again.

    Through Nginx, which asks the other replica when one answers 503, and then takes both out of
    its rotation for a moment (max_fails): in that moment it answers 502 itself.
    """
    answers = [(round(when - failover.kill_started, 1), status) for when, status, _ in failover.readyz]
    for _, status, body in failover.readyz:
        assert status in (200, 502, 503), answers
        if status == 503:
            assert body["checks"] == {"database": "ok", "channel_layer": "failing"}, body
    before = [status for when, status in answers if when < 0]
    after = [status for when, status in answers if when >= 0]
    assert before and set(before) == {200}, answers
    # Not ready for one stretch (if a probe fell in it), then ready again for good.
    assert after and after[-1] == 200, answers
    not_ready = [index for index, status in enumerate(after) if status != 200]
    if not_ready:
        assert not_ready == list(range(not_ready[0], not_ready[-1] + 1)), answers
    ready_again = not_ready[-1] + 1 if not_ready else 0
    first_after = len(before)
    REPORT.append(
        {
            "variant": failover.variant,
            "test": "redis failover: /readyz",
            "not_ready_from_s": answers[first_after + not_ready[0]][0] if not_ready else None,
            "ready_again_at_s": answers[first_after + ready_again][0],
        }
    )


def test_the_old_primary_returns_as_a_replica_of_the_new_one(failover: Failover) -> None:
    back = failover.old_primary_back
    assert (back["role"], back["master_host"], back["master_link_status"]) == (
        "slave",
        failover.new_primary,
        "up",
    ), back
