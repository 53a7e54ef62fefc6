"""What the machine offers the stack: free ports, a Docker engine, commands that always end."""

import shutil
import socket
import subprocess
from typing import Any

LOOPBACK = "127.0.0.1"  # every test and load-test client talks to the stack here only


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now (the kernel's choice), for a published or local server."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run(
    args: list[str], timeout: float = 600, *, merged: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (or ``timeout``), its output captured as text (``merged``: stderr
    interleaved into stdout); never raises on a non-zero exit: the caller reads ``returncode``."""
    output: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT if merged else subprocess.PIPE,
    }
    return subprocess.run(  # noqa: S603 - argv lists built by the callers, no shell
        args, text=True, errors="replace", timeout=timeout, check=False, **output, **kwargs
    )


def docker_available() -> bool:
    """A Docker client is installed and its engine answers."""
    return shutil.which("docker") is not None and run(["docker", "info"], timeout=60).returncode == 0
