"""One generator process: its share of the sockets, held open and listening, driven over a pipe.

Commands (tuples) and answers (dicts), one answer per command:

- ``("open", count, rate)``: opens ``count`` more sockets, at most ``rate`` handshakes a second,
  each a member of the room (its history frame read); answers ``{"opened", "failed"}``.
- ``("collect", sender, seconds)``: waits until every open socket got the probe of ``sender``, or
  ``seconds`` passed; answers ``{"open", "latencies", "dropped"}``.
- ``("close",)``: closes every socket; answers ``{"closed"}`` and the process ends.

A process holds at most SOCKETS_PER_PROCESS sockets (one descriptor each), from its own source
addresses, so neither its open-files limit nor a source address's ephemeral ports run out first.
"""

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtests.lib.probe import decode_probe, latency_ms
from loadtests.lib.urls import join_url, origin_of, ws_base_url
from loadtests.sockets.plan import failure_reason

CONNECT_TIMEOUT = 30.0
HANDSHAKES_IN_FLIGHT = 100


class Worker:
    def __init__(self, base_url: str, room: str, sources: list[str]) -> None:
        self.url = join_url(ws_base_url(base_url), f"/ws/chat/{room}/")
        self.origin = origin_of(base_url)
        self.sources = itertools.cycle(sources)
        self.sockets: set[ClientConnection] = set()
        self.dropped: Counter[str] = Counter()
        self.received: dict[str, list[float]] = {}  # probe sender -> latencies of its copies
        self.arrived = asyncio.Event()  # set at every copy: collect() re-checks its count
        self.readers: set[asyncio.Task[None]] = set()

    async def open_one(self, gate: asyncio.Semaphore, failed: Counter[str]) -> None:
        async with gate:
            try:
                ws = await connect(
                    self.url, origin=self.origin, compression=None,  # type: ignore[arg-type]
                    open_timeout=CONNECT_TIMEOUT, ping_interval=None, max_queue=None,
                    local_addr=(next(self.sources), 0),
                )  # fmt: skip
                history = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
            except Exception as exc:  # every failure is counted by its reason
                failed[failure_reason(exc)] += 1
                return
            if history.get("type") != "chat.history":
                # The app's refusal names its cause (error storage_unavailable: no history in time).
                words = [str(history[key]) for key in ("type", "code") if key in history]
                failed[" ".join(["first frame", *words])] += 1
                await ws.close()
                return
        self.sockets.add(ws)
        reader = asyncio.ensure_future(self.listen(ws))
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)

    async def open(self, count: int, rate: float) -> dict[str, Any]:
        gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
        failed: Counter[str] = Counter()
        before = len(self.sockets)
        started = time.monotonic()
        tasks = []
        for number in range(count):
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(self.open_one(gate, failed)))
        await asyncio.gather(*tasks)
        return {"opened": len(self.sockets) - before, "failed": dict(failed)}

    async def listen(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                received = time.time()
                if isinstance(text, str) and '"chat.message"' in text:
                    probe = decode_probe(json.loads(text).get("message"))
                    if probe is not None:
                        self.received.setdefault(probe.sender, []).append(latency_ms(probe.sent_at, received))
                        self.arrived.set()
        except ConnectionClosed:
            pass
        except OSError as exc:
            self.dropped[failure_reason(exc)] += 1
            self.sockets.discard(ws)
            return
        if ws in self.sockets:  # not closed by this process: the server or a proxy closed it
            self.sockets.discard(ws)
            self.dropped[ws.close_reason or f"closed {ws.close_code}"] += 1

    async def collect(self, sender: str, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while len(self.received.get(sender, [])) < len(self.sockets) and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))
        return {
            "open": len(self.sockets),
            "latencies": self.received.pop(sender, []),
            "dropped": dict(self.dropped),
        }

    async def close(self) -> dict[str, Any]:
        sockets, self.sockets = list(self.sockets), set()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return {"closed": len(sockets)}


async def serve(conn: Connection, base_url: str, room: str, sources: list[str]) -> None:
    worker = Worker(base_url, room, sources)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        name, *args = command
        if name == "open":
            conn.send(await worker.open(*args))
        elif name == "collect":
            conn.send(await worker.collect(*args))
        elif name == "close":
            conn.send(await worker.close())
            return
        else:
            conn.send({"error": f"unknown command {name!r}"})


def main(conn: Connection, base_url: str, room: str, sources: list[str]) -> None:
    """The process's entry point (multiprocessing): uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(conn, base_url, room, sources))
    else:
        uvloop.run(serve(conn, base_url, room, sources))
