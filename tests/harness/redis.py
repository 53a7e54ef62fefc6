"""A throwaway redis-server: no persistence, loopback only."""

from __future__ import annotations

import shutil
import socket

from tests.harness._process import HarnessError, Service


class RedisServer(Service):
    name = "redis"

    def __init__(
        self, *, port: int | None = None, keep: bool | None = None, binary: str | None = None
    ) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise HarnessError("redis-server not found on PATH (apt-get install redis-server)")
        self.binary = found
        super().__init__(port=port, keep=keep)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.tmp),
            "--daemonize", "no",
            "--logfile", "",  # stdout, which is the log file
        ]  # fmt: skip

    def ready(self) -> bool:
        return self.ping()

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers PING with PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
