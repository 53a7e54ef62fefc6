#!/usr/bin/env python3
"""Run N copies of a server on one listening socket: Daphne (no workers option), Hypercorn (whose
master keeps the socket open while its workers drain).

The socket is bound once here and inherited by every child; the child command receives its file
descriptor number in place of ``{fd}`` (Daphne: ``daphne --fd {fd} ...``). The kernel spreads new
connections over the processes that accept on the shared socket.

Signals: SIGTERM/SIGINT are forwarded to every child, which then shut down gracefully; children
still running after ``--grace`` seconds are killed. The supervisor closes its own copy of the
listening socket at once: while any process holds it open, the kernel keeps completing new
connections into its backlog, which no process accepts any more, and a proxy's request sent down
one waits until the last child exits (instead of being refused and retried on another replica).
A child that dies on its own is restarted (after a short pause), so one crash does not take its
siblings' connections down.
Exit status: 0 after a requested shutdown in which every child exited cleanly, 1 otherwise.
"""

import argparse
import signal
import socket
import subprocess
import sys
import time

RESTART_PAUSE = 1.0  # seconds before restarting a child that died on its own


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--grace", type=float, default=20.0, help="seconds to wait for children on stop")
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the child command, with {fd}")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command or not any("{fd}" in part for part in args.command):
        parser.error("the child command must contain {fd}")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    return args


def listen(bind: str, backlog: int) -> socket.socket:
    host, _, port = bind.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "0.0.0.0", int(port)))  # noqa: S104 - binding all interfaces is the point in a container
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, sock: socket.socket, command: list[str], processes: int, grace: float) -> None:
        self.sock = sock
        self.command = [part.replace("{fd}", str(sock.fileno())) for part in command]
        self.fd = sock.fileno()
        self.processes = processes
        self.grace = grace
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, pass_fds=(self.fd,))  # noqa: S603 - our own argv

    def request_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.sock.close()  # the children close theirs as they stop; then new connections are refused
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self.children = [self.spawn() for _ in range(self.processes)]
        while not self.stopping:
            for index, child in enumerate(self.children):
                if child.poll() is not None and not self.stopping:
                    message = f"prefork: child {child.pid} exited with {child.returncode}; restarting"
                    print(message, file=sys.stderr, flush=True)
                    time.sleep(RESTART_PAUSE)
                    if not self.stopping:
                        self.children[index] = self.spawn()
            time.sleep(0.2)
        return self.wait_for_children()

    def wait_for_children(self) -> int:
        deadline = time.monotonic() + self.grace
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        clean = all(child.returncode in (0, -signal.SIGTERM, -signal.SIGINT) for child in self.children)
        return 0 if clean else 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sock = listen(args.bind, args.backlog)
    return Supervisor(sock, args.command, args.processes, args.grace).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
