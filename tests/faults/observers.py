"""The project's own clients watching a fault: the chat page in headless Chromium, the Locust chat
users. Each records what it went through; neither asserts anything itself."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.faults.stack import ROOT, wait_until
from tests.harness.browser import headless_chromium


class ChatPage:
    """The chat page joined to ``room``; a thread records each status line it shows (polled)."""

    def __init__(self, base_url: str, room: str) -> None:
        self.base_url, self.room = base_url, room
        self.statuses: list[str] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self.driver: Any = None

    def __enter__(self) -> ChatPage:
        self.driver = headless_chromium()
        self.driver.get(self.base_url + "/")
        room_field = self.driver.find_element("id", "room")
        room_field.clear()
        room_field.send_keys(self.room)
        self.driver.find_element("css selector", "#join button").click()
        wait_until(lambda: self.status() == f"Connected to {self.room}", 30, "the page connected")
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout=10)
        self.driver.quit()

    def status(self) -> str:
        return self.driver.find_element("id", "status").text

    def messages(self) -> list[str]:
        return [item.text for item in self.driver.find_elements("css selector", "#messages li.message")]

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.status()
            except Exception:  # the driver is shutting down
                return
            if not self.statuses or self.statuses[-1] != text:
                self.statuses.append(text)
            time.sleep(0.1)


class LocustChat:
    """``locust -f loadtests/locustfiles/chat.py`` headless, as the load tests run it; stopped with
    SIGINT (Locust then writes its final statistics), and bounded by ``-t`` in any case."""

    def __init__(self, base_url: str, workdir: Path, users: int = 4, run_time: int = 600) -> None:
        self.prefix = workdir / "locust"
        self.users = users
        locust = Path(sys.executable).parent / "locust"
        self.command = [
            str(locust), "-f", "loadtests/locustfiles/chat.py", "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{run_time}s", "--host", base_url,
            "--csv", str(self.prefix), "--chat-room", f"locust-{workdir.name}",
            "--loglevel", "WARNING",
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    def __enter__(self) -> LocustChat:
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()

    def rows(self, suffix: str) -> list[dict[str, str]]:
        path = Path(f"{self.prefix}_{suffix}.csv")
        if not path.exists():
            return []
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def connects(self) -> int:
        """Successful WebSocket handshakes (each user's first, and its reconnections)."""
        return sum(
            int(row["Request Count"]) - int(row["Failure Count"])
            for row in self.rows("stats")
            if row["Name"].startswith("connect ")
        )

    def all_back(self) -> bool:
        """Every user dropped so far has connected again (the statistics are written each second)."""
        return self.connects() >= self.users + sum(self.drops().values())

    def drops(self) -> dict[str, int]:
        """Why sockets were dropped (``disconnect`` failures), with how often."""
        return {
            row["Error"]: int(row["Occurrences"])
            for row in self.rows("failures")
            if row["Name"].startswith("disconnect ")
        }
