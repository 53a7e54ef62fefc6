"""The fan-out generator: members in rooms, senders at a stepped rate, deliveries timed and counted.

One process, one asyncio loop (uvloop when installed), one task per socket. Latency is the
receiver's wall clock minus the send time the probe carries (``loadtests/lib/probe.py``), the same
as the Locust chat scenario's. A delivery belongs to a step by its send time: the measured window
of a step counts the messages sent within it and every copy of them received before the step is
judged (``grace`` seconds after its last send); a copy still missing then is a failure.
"""

import asyncio
import contextlib
import itertools
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtests.fanout import cpu
from loadtests.fanout.steps import StepResult, judge, summarize_latencies, sustained
from loadtests.lib.probe import Probe, decode_probe, encode_probe, latency_ms
from loadtests.lib.urls import join_url, origin_of, ws_base_url

# The app allows 20 messages/s per socket (burst 40): senders stay well below it.
SENDER_RATE = 10.0
CONNECT_TIMEOUT = 15.0
CONNECT_CONCURRENCY = 50  # handshakes in flight while the rooms fill


@dataclass(frozen=True)
class Plan:
    base_url: str  # http://host:port of the stack's Nginx
    rooms: int
    members: int  # per room; every member receives every message of its room, the sender's own too
    rates: tuple[float, ...]  # messages/s of each step, over all rooms
    settle: float  # seconds at a step's rate before its window opens
    seconds: float  # the measured window of each step
    threshold_ms: float  # a step holds while its delivery p99 stays within this
    grace: float = 1.0  # seconds after a step's last send before it is judged
    warmup: float = 0.0  # seconds at the first step's rate before the first step, not measured
    sender_rate: float = SENDER_RATE
    room_prefix: str = "fanout"

    def senders(self, rate: float) -> int:
        return min(self.rooms * self.members, max(1, math.ceil(rate / self.sender_rate)))


@dataclass
class Member:
    room: int
    index: int
    ws: ClientConnection
    process: str | None = None  # a process token the server announces (the ceiling's broadcaster)


@dataclass
class Window:
    """The step being measured: what its senders sent and its members received."""

    start: float  # wall clock
    end: float
    expected: int = 0
    messages: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)

    def holds(self, sent_at: float) -> bool:
        return self.start <= sent_at < self.end


async def cpu_over(opens: float, seconds: float) -> tuple[float, float]:
    """The machine's and the generator's busy cores from loop time ``opens`` for ``seconds``."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, opens - loop.time()))
    before = cpu.read()
    await asyncio.sleep(seconds)
    return cpu.cores_used(before, cpu.read())


class FanoutRun:
    def __init__(self, plan: Plan, on_step: Callable[[StepResult], None] | None = None) -> None:
        self.plan = plan
        self.on_step = on_step  # told of each step as soon as it is judged
        self.tag = uuid.uuid4().hex[:8]  # this run's probes, among anything else in the rooms
        self.members: list[Member] = []
        self.window: Window | None = None  # the step collecting deliveries, until it is judged
        self.span: Window | None = None  # the step under way, settle included: its failures
        self.seq = itertools.count()
        self.sent = 0  # every message sent, settles included

    # --- sockets ------------------------------------------------------------------------------

    def url(self, room: int) -> str:
        path = f"/ws/chat/{self.plan.room_prefix}-{self.tag}-{room}/"
        return join_url(ws_base_url(self.plan.base_url), path)

    async def join(self, room: int, index: int, gate: asyncio.Semaphore) -> Member:
        async with gate:
            ws = await connect(
                self.url(room), origin=origin_of(self.plan.base_url), compression=None,  # type: ignore[arg-type]
                open_timeout=CONNECT_TIMEOUT, ping_interval=None, max_queue=None,
            )  # fmt: skip
            first = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
            if first.get("type") != "chat.history":
                await ws.close()
                raise RuntimeError(f"room {room}: expected the history frame, got {str(first)[:120]}")
            return Member(room, index, ws, first.get("process"))

    async def fill_rooms(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        joins = [self.join(r, i, gate) for i in range(self.plan.members) for r in range(self.plan.rooms)]
        self.members = list(await asyncio.gather(*joins))

    def audience(self, sender: Member) -> int:
        """Members a message of ``sender`` reaches: its room, or (a server that fans out within one
        process, and says so) the members of its room in the sender's process."""
        return sum(1 for m in self.members if m.room == sender.room and m.process == sender.process)

    async def receive(self, member: Member) -> None:
        prefix = f"{self.tag}."
        try:
            async for text in member.ws:
                received = time.time()
                if not isinstance(text, str):
                    continue
                if '"chat.message"' in text:
                    probe = decode_probe(json.loads(text).get("message"))
                    window = self.window
                    if probe and probe.sender.startswith(prefix) and window and window.holds(probe.sent_at):
                        window.latencies.append(latency_ms(probe.sent_at, received))
                elif '"error"' in text and self.span is not None:
                    self.span.errors[str(json.loads(text).get("code", "unknown"))] += 1
        except ConnectionClosed:
            pass
        if self.span is not None:  # the server closed it (too_slow, a failure) or the socket broke
            close = member.ws.close_reason or f"code {member.ws.close_code}"
            self.span.closes[close[:60]] += 1

    # --- sending ------------------------------------------------------------------------------

    async def send(self, sender: Member, number: int, rate: float, start: float, end: float) -> None:
        """One sender's messages at ``rate``/s from ``start`` to ``end`` (loop clock), on schedule:
        a late send goes at once, not shifting the ones after it (an open loop)."""
        loop = asyncio.get_running_loop()
        audience = self.audience(sender)
        due = start + number / rate  # the senders' sends interleave
        per_sender = rate / self.plan.senders(rate)
        while due < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent_at = time.time()
            text = encode_probe(Probe(f"{self.tag}.{number}", next(self.seq), sent_at))
            try:
                await sender.ws.send(json.dumps({"message": text}))
            except ConnectionClosed:
                return  # counted by its receiver
            self.sent += 1
            window = self.window
            if window is not None and window.holds(sent_at):
                window.messages += 1
                window.expected += audience
            due += 1 / per_sender

    def choose_senders(self, count: int) -> list[Member]:
        """Spread over the rooms first, then over each room's members."""
        by_room = sorted(self.members, key=lambda m: (m.index, m.room))
        return by_room[:count]

    async def step(self, rate: float) -> StepResult:
        plan = self.plan
        loop = asyncio.get_running_loop()
        senders = self.choose_senders(plan.senders(rate))
        start = loop.time()
        now = time.time()
        opens = now + plan.settle
        window = Window(opens, opens + plan.seconds)
        self.span, self.window = window, window
        cpu_used = asyncio.ensure_future(cpu_over(start + plan.settle, plan.seconds))
        await asyncio.gather(
            *(
                self.send(sender, n, rate, start, start + plan.settle + plan.seconds)
                for n, sender in enumerate(senders)
            )
        )
        await asyncio.sleep(plan.grace)
        self.window = None  # later copies of this step's messages are no longer counted
        machine_cores, generator_cores = await cpu_used
        result = StepResult(
            rate=rate, senders=len(senders), seconds=plan.seconds, messages=window.messages,
            expected=window.expected, deliveries=len(window.latencies),
            errors=dict(window.errors), closes=dict(window.closes),
            machine_cores=machine_cores, generator_cores=generator_cores,
        )  # fmt: skip
        return judge(summarize_latencies(result, window.latencies), plan.threshold_ms)

    async def warm_up(self) -> None:
        """The first step's rate, unmeasured: a fresh stack's first messages (connections to the
        database and Redis, code paths run once) would otherwise fail the first step."""
        rate = self.plan.rates[0]
        start = asyncio.get_running_loop().time()
        senders = self.choose_senders(self.plan.senders(rate))
        await asyncio.gather(
            *(self.send(sender, n, rate, start, start + self.plan.warmup) for n, sender in enumerate(senders))
        )
        await asyncio.sleep(self.plan.grace)

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        started = time.monotonic()
        await self.fill_rooms()
        joined = time.monotonic() - started
        receivers = [asyncio.create_task(self.receive(m)) for m in self.members]
        steps: list[StepResult] = []
        try:
            if plan.warmup > 0:
                await self.warm_up()
            for rate in plan.rates:
                steps.append(await self.step(rate))
                if self.on_step is not None:
                    self.on_step(steps[-1])
                if not steps[-1].passed:
                    break
        finally:
            self.span = None
            for member in self.members:
                with contextlib.suppress(Exception):
                    await member.ws.close()
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
        best = sustained(steps)
        return {
            "tool": "fanout",
            "rooms": plan.rooms,
            "members": plan.members,
            "sockets": len(self.members),
            "processes_seen": len({m.process for m in self.members}),
            "machine_cores": cpu.machine_cores(),
            "threshold_ms": plan.threshold_ms,
            "join_seconds": round(joined, 2),
            "steps": [s.to_json() for s in steps],
            "sustained": best.to_json() if best else None,
            "stopped": next((f"rate {s.rate:g}/s: {s.why}" for s in steps if not s.passed), "last step held"),
        }
