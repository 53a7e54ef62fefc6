"""No acknowledged message is lost: a known sequence from many clients, through three faults.

Senders in several rooms each send their own numbered messages, one at a time (the next once the
last one is settled), while a replica is killed (SIGKILL), Redis restarts, and the whole stack goes
``make down`` and ``make up`` again (the database volume is kept). Each message ends one of three
ways for its sender: acknowledged (its own ``chat.message`` copy, with the database id), reported
failed (an error frame, or the socket closed before the acknowledgement), or silently dropped
(neither, within ACK_TIMEOUT). Afterwards PostgreSQL must hold every acknowledged message under its
id, and no message may have been silently dropped. A message reported failed may still have been
stored (the socket closed between the store and the acknowledgement): its sender sends it again,
so delivery is at least once; the test reports how many.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.faults.clients import InBackground, close_code, join, unique_room
from tests.faults.stack import TEST_TIMEOUT, Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

ROOMS = 3
SENDERS_PER_ROOM = 4
PAUSE = 0.2  # seconds between two messages of one sender
MAX_MESSAGES = 1500  # per sender: the run also ends by itself
LIFETIME = 900.0  # seconds a sender runs at most
ACK_TIMEOUT = 30.0  # the app answers within WS_DEPENDENCY_TIMEOUT (5 s) per dependency
SETTLE = 5  # seconds of traffic between two faults


@dataclass
class SenderRecord:
    room: str
    acked: dict[str, int] = field(default_factory=dict)  # text -> database id
    failed: dict[str, str] = field(default_factory=dict)  # text -> how the failure was reported
    silent: list[str] = field(default_factory=list)
    connects: int = 0


class Sender:
    """Sends ``<name>:<n>`` for n = 0, 1, ... one at a time, reconnecting after a close."""

    def __init__(self, stack: Stack, room: str, name: str) -> None:
        self.stack, self.name = stack, name
        self.record = SenderRecord(room)
        self.sequence = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIFETIME
        attempt = 0
        while not stop.is_set() and self.sequence < MAX_MESSAGES and loop.time() < deadline:
            try:
                ws, _ = await join(self.stack.ws_url, self.stack.base_url, self.record.room, name=self.name)
            except (OSError, WebSocketException, TimeoutError, AssertionError):
                attempt += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            attempt = 0
            self.record.connects += 1
            async with ws:
                while not stop.is_set() and self.sequence < MAX_MESSAGES:
                    text = f"{self.name}:{self.sequence}"
                    self.sequence += 1
                    if not await self.send_one(ws, text):
                        break  # the socket is gone: reconnect
                    await asyncio.sleep(PAUSE)
            await asyncio.sleep(0.25)

    async def send_one(self, ws: Any, text: str) -> bool:
        """Send ``text`` and settle it; False when the socket is no longer usable."""
        try:
            await ws.send(json.dumps({"message": text}))
            async with asyncio.timeout(ACK_TIMEOUT):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "chat.message" and frame.get("message") == text:
                        self.record.acked[text] = frame["id"]
                        return True
                    if frame.get("type") == "error":
                        self.record.failed[text] = frame["code"]
                        if frame["code"] == "storage_unavailable":
                            return True  # not stored, and the socket stays open
                        # Any other error is followed by a close: read on until it comes.
        except ConnectionClosed as exc:
            self.record.failed.setdefault(text, f"closed {close_code(exc)}")
            return False
        except TimeoutError:
            self.record.silent.append(text)
            return False


class SendersInBackground(InBackground):
    """The senders in the background, while the test injects faults."""

    def __init__(self, stack: Stack) -> None:
        rooms = [unique_room(f"noloss{index}") for index in range(ROOMS)]
        self.senders = [
            Sender(stack, room, f"{room}-s{index}") for room in rooms for index in range(SENDERS_PER_ROOM)
        ]
        super().__init__(self.senders, join_timeout=ACK_TIMEOUT + 30)

    @property
    def records(self) -> list[SenderRecord]:
        return [sender.record for sender in self.senders]

    def acked(self) -> int:
        return sum(len(record.acked) for record in self.records)


def traffic_goes_on(senders: SendersInBackground, seconds: float = SETTLE) -> None:
    """Wait until messages are acknowledged again, then let them flow a little."""
    count = senders.acked()
    wait_until(lambda: senders.acked() > count + len(senders.senders), 120, "acknowledgements resume")
    time.sleep(seconds)


def test_every_acknowledged_message_is_in_postgresql(stack: Stack, record) -> None:
    faults: list[str] = []
    with SendersInBackground(stack) as senders:
        traffic_goes_on(senders)

        victim = stack.containers(stack.ws_service)[0]
        stack.docker("kill", "--signal", "KILL", victim)
        faults.append("replica killed")
        traffic_goes_on(senders)
        stack.docker("start", victim)
        stack.wait_container_healthy(victim)
        traffic_goes_on(senders)

        restarted = stack.compose("restart", "redis")
        assert restarted.returncode == 0, restarted.stderr
        faults.append("redis restarted")
        traffic_goes_on(senders)

        down = stack.make("down")
        assert down.returncode == 0, down.stderr
        stack.up()
        faults.append("make down && make up")
        stack.wait_serving()
        traffic_goes_on(senders)

    records = senders.records
    rooms = sorted({r.room for r in records})
    room_list = ", ".join(f"'{room}'" for room in rooms)
    rows = stack.sql(f"SELECT id, body FROM chat_message WHERE room IN ({room_list})")
    stored = {int(message_id): body for message_id, body in rows}
    stored_bodies = set(stored.values())
    acked = {text: message_id for r in records for text, message_id in r.acked.items()}
    failed = {text: how for r in records for text, how in r.failed.items()}
    silent = [text for r in records for text in r.silent]
    missing = {text: message_id for text, message_id in acked.items() if stored.get(message_id) != text}
    record(
        faults=faults,
        senders=len(records),
        sent=len(acked) + len(failed) + len(silent),
        acknowledged=len(acked),
        acknowledged_missing_in_db=len(missing),
        reported_failed=len(failed),
        reported_failed_but_stored=len(set(failed) & stored_bodies),
        failure_reports=dict(Counter(how for how in failed.values())),
        silently_dropped=len(silent),
        reconnects=sum(r.connects for r in records) - len(records),
    )
    assert acked and len(faults) == 3
    assert missing == {}, f"acknowledged but not in PostgreSQL: {list(missing.items())[:10]}"
    assert silent == [], f"neither acknowledged nor reported failed: {silent[:10]}"
    # Every stored message of these rooms was sent by a sender, once (nothing invented or doubled).
    assert len(stored) == len(stored_bodies) and stored_bodies <= set(acked) | set(failed)
