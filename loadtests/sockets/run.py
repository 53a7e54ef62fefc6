"""A capacity run: worker processes hold the sockets, this process steps them up and measures.

Per step: the step's new sockets are opened (spread over the workers, each with its own source
addresses), ``settle`` seconds pass, the containers' memory is read (app, Nginx, Redis apart, when
the stack's compose project is known), one message is broadcast to the room from a socket of this
process, and the workers report who got it. The run stops at the first step that does not hold.
What the containers say meanwhile (memory, CPU, kills, Nginx's errors) is read in ``observe``.
"""

import contextlib
import json
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from loadtests.lib.probe import Probe, encode_probe
from loadtests.lib.urls import join_url, origin_of, ws_base_url
from loadtests.sockets import worker
from loadtests.sockets.observe import OutOfMemoryWatch, docker_logs_since, nginx_errors, usage_by_component
from loadtests.sockets.plan import Plan, Step, failure_reason, summary

BROADCAST_TIMEOUT = 15.0
OOM_EVENT_DELAY = 1.0  # seconds for a kill's event to come through `docker events`


class CapacityRun:
    def __init__(
        self, plan: Plan, project: str | None = None, on_step: Callable[[Step], None] | None = None
    ) -> None:
        self.plan = plan
        self.project = project
        self.on_step = on_step
        self.tag = uuid.uuid4().hex[:8]
        self.room = f"{plan.room}-{self.tag}"
        self.pipes: list[Connection] = []
        self.sender: ClientConnection | None = None
        self.resources = contextlib.ExitStack()
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.oom: OutOfMemoryWatch | None = None

    # --- the workers --------------------------------------------------------------------------

    def start_workers(self) -> None:
        context = multiprocessing.get_context("spawn")
        sources = self.plan.sources
        count = self.plan.processes
        for index in range(count):
            mine = sources[index::count] or [sources[index % len(sources)]]
            here, there = context.Pipe()
            process = context.Process(
                target=worker.main, args=(there, self.plan.base_url, self.room, mine), daemon=True
            )
            process.start()
            self.pipes.append(here)
            self.processes.append(process)

    def ask_all(self, commands: list[tuple[Any, ...]], timeout: float) -> list[dict[str, Any]]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a generator process did not answer within {timeout:g} s")
            answers.append(pipe.recv())
        return answers

    def stop_workers(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError):
            self.ask_all([("close",)] * len(self.pipes), timeout=60)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()

    # --- a step -------------------------------------------------------------------------------

    def open_to(self, step: Step, already: int) -> None:
        count = len(self.pipes)
        shares = [
            (step.sockets - already) // count + (1 if n < (step.sockets - already) % count else 0)
            for n in range(count)
        ]
        rate = self.plan.rate / count
        started = time.monotonic()
        timeout = max(shares) / rate + worker.CONNECT_TIMEOUT * 2 + 30
        for answer in self.ask_all([("open", share, rate) for share in shares], timeout):
            step.handshake_failures.update(answer["failed"])
        step.seconds = time.monotonic() - started

    def open_sender(self) -> ClientConnection:
        """The socket the broadcasts come from: a member of the room too, opened before the first
        step, so that a stack refusing handshakes at its limit still gets the step's broadcast.
        A context manager (websockets' sync client), entered by ``run``."""
        base = self.plan.base_url
        url = join_url(ws_base_url(base), f"/ws/chat/{self.room}/")
        return connect(url, origin=origin_of(base), compression=None, open_timeout=30)  # type: ignore[arg-type]

    def broadcast(self, number: int) -> str:
        """One probe message into the room; its sender name, once its own copy is back (stored and
        broadcast to the room)."""
        assert self.sender is not None
        name = f"capacity-{self.tag}-{number}"
        self.sender.send(
            json.dumps({"message": encode_probe(Probe(sender=name, seq=number, sent_at=time.time()))})
        )
        deadline = time.monotonic() + BROADCAST_TIMEOUT
        while time.monotonic() < deadline:
            frame = json.loads(self.sender.recv(timeout=max(0.01, deadline - time.monotonic())))
            if frame.get("type") in ("chat.message", "error"):
                break
        return name

    def measure(self, step: Step, number: int, began: float) -> None:
        time.sleep(self.plan.settle)
        if self.project:
            usage = usage_by_component(self.project)
            step.memory, step.cpu_percent = usage.memory, usage.cpu_percent
        try:
            sender = self.broadcast(number)
            wait = self.plan.delivery_timeout
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            # The broadcasts' own socket is gone (its server process died, say): the step fails,
            # and the held sockets are still counted, at once.
            step.broadcast_error = failure_reason(exc)
            sender, wait = "", 0.0
        answers = self.ask_all([("collect", sender, wait)] * len(self.pipes), wait + 30)
        dropped: Counter[str] = Counter()
        for answer in answers:
            step.open += answer["open"]
            step.delivered += len(answer["latencies"])
            step.latencies_ms.extend(answer["latencies"])
            dropped.update(answer["dropped"])
        step.dropped = dropped - self.dropped_before
        self.dropped_before = dropped
        if self.oom is not None:
            time.sleep(OOM_EVENT_DELAY)
            step.out_of_memory = self.oom.take()
        if step.memory and not step.judge().held:
            # What Nginx said while the step failed: "worker_connections are not enough",
            # "Too many open files", "Cannot allocate memory", an upstream that timed out...
            for container in step.memory.get("nginx", {}):
                for message, count in nginx_errors(docker_logs_since(container, began)).items():
                    step.nginx_errors[message] = step.nginx_errors.get(message, 0) + count

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        baseline = usage_by_component(self.project).memory if self.project else {}
        steps: list[Step] = []
        self.dropped_before: Counter[str] = Counter()
        try:
            if self.project:
                self.oom = self.resources.enter_context(OutOfMemoryWatch(self.project))
            self.start_workers()
            self.sender = self.resources.enter_context(self.open_sender())
            self.sender.recv(timeout=BROADCAST_TIMEOUT)  # the history frame
            held = 0
            for number, target in enumerate(self.plan.steps, 1):
                step = Step(target)
                began = time.time()
                self.open_to(step, held)
                self.measure(step, number, began)
                steps.append(step.judge())
                if self.on_step:
                    self.on_step(step)
                if not step.held:
                    break
                held = step.open
        finally:
            self.resources.close()
            self.stop_workers()
        return {
            "tool": "sockets",
            "room": self.room,
            "processes": self.plan.processes,
            "sources": self.plan.sources,
            "steps": [step.to_json(baseline) for step in steps],
            "baseline_memory_bytes": {
                component: sum(found.values()) for component, found in baseline.items()
            },
            **summary(steps),
        }
