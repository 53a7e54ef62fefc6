"""The Nginx config of the stack, run for real on this host against stand-in upstreams.

The templates are rendered by ``nginx/entrypoint.sh render`` (the same code the container runs) into
a temp dir, and the host's ``/usr/sbin/nginx`` serves them on a free 127.0.0.1 port. Like in the
container, every nginx (and the entrypoint) runs as a non-root user, here ``nobody``. The app is a
small asyncio server on 127.0.0.1 that answers HTTP with the request it saw, and WebSocket upgrades
with an echo. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from stackctl import SERVERS_FILE, free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "nginx" / "entrypoint.sh"
NGINX = "/usr/sbin/nginx"
NOBODY = 65534  # uid and gid; the container runs nginx as uid 101, non-root all the same
HOST = "127.0.0.1"
SECRET = "SECRET-OUTSIDE-STATIC-ROOT"

pytestmark = pytest.mark.skipif(
    not (Path(NGINX).exists() and shutil.which("envsubst") and os.geteuid() == 0),
    reason="needs /usr/sbin/nginx, envsubst and root (to run nginx as an unprivileged user)",
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "content-security-policy": "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'",
    "cross-origin-opener-policy": "same-origin",
}
# What the stand-in app adds to every response, like Django's SecurityMiddleware but with values
# different from nginx's, so the test can tell whose header reached the client.
APP_HEADERS = [
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin-allow-popups"),
    ("Strict-Transport-Security", "max-age=60"),
    ("X-Request-ID", "the-apps-copy"),
]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers.get_list("permissions-policy")[0].startswith("camera=()")
    [request_id] = response.headers.get_list("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.headers["server"] == "nginx"  # server_tokens off: no version


# --- The stand-in app ------------------------------------------------------------------------------


class StandIn:
    """HTTP/1.1 with keepalive, echoing each request as JSON; WebSocket upgrades on /ws/ echo frames.

    Paths: /echo*, /api/*, /healthz, /readyz answer 200; /status/NNN answers NNN; anything else 404.
    """

    WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> StandIn:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, HOST, 0), self.loop)
        self.server = future.result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def seen(self, marker: str) -> list[dict]:
        return [r for r in self.requests if marker in r["target"]]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                method, target, version = request_line.split(" ", 2)
                headers = [[part.strip() for part in line.split(":", 1)] for line in lines if line]
                lower = {name.lower(): value for name, value in headers}
                body = await reader.readexactly(int(lower.get("content-length", "0")))
                record = {
                    "method": method,
                    "target": target,
                    "version": version,
                    "headers": headers,
                    "body_len": len(body),
                    "peer": list(peer),
                }
                self.requests.append(record)
                if lower.get("upgrade", "").lower() == "websocket":
                    await self._websocket(reader, writer, record, lower["sec-websocket-key"])
                    return
                status = 404
                if target.startswith(("/echo", "/api/", "/healthz", "/readyz")):
                    status = 200
                elif match := re.match(r"/status/(\d{3})", target):
                    status = int(match.group(1))
                payload = json.dumps(record).encode()
                extra = "".join(f"{name}: {value}\r\n" for name, value in APP_HEADERS)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _websocket(self, reader, writer, record: dict, key: str) -> None:
        accept = base64.b64encode(hashlib.sha1((key + self.WS_GUID).encode()).digest()).decode()
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self._send_frame(writer, 0x1, json.dumps(record).encode())  # first message: what the app saw
        while True:
            first, second = await reader.readexactly(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if opcode == 0x8:
                self._send_frame(writer, 0x8, data)
                await writer.drain()
                return
            self._send_frame(writer, 0xA if opcode == 0x9 else opcode, data)
            await writer.drain()

    @staticmethod
    def _send_frame(writer: asyncio.StreamWriter, opcode: int, data: bytes) -> None:
        if len(data) < 126:
            header = struct.pack("!BB", 0x80 | opcode, len(data))
        elif len(data) < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 126, len(data))
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, len(data))
        writer.write(header + data)


# --- Rendering and running nginx -------------------------------------------------------------------


class Workspace:
    """A temp dir owned by ``nobody``: static files, a stub ``getent``, and one run dir per nginx."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.base.chmod(0o755)
        os.chown(self.base, NOBODY, NOBODY)
        self.static = self.base / "static"
        (self.static / "chat").mkdir(parents=True)
        (self.static / "chat" / "chat.0123456789ab.css").write_text("body { color: black; }\n")
        (self.static / "chat" / "chat.css").write_text("body { color: black; }\n")
        (self.base / "secret.txt").write_text(SECRET)
        (self.base / "etc").mkdir()
        (self.base / "etc" / "passwd").write_text(SECRET)
        # A stub getent on PATH: `getent ahostsv4 NAME` answers from hosts/NAME (one address a line),
        # and exits 2 (not found) when that file does not exist; IP literals resolve to themselves.
        self.hosts = self.base / "hosts"
        self.hosts.mkdir()
        self.bin = self.base / "bin"
        self.bin.mkdir()
        getent = self.bin / "getent"
        getent.write_text(
            "#!/bin/sh\n"
            'case $2 in *[!0-9.]*) ;; *) printf "%s STREAM %s\\n" "$2" "$2"; exit 0 ;; esac\n'
            f'f="{self.hosts}/$2"\n'
            '[ -f "$f" ] || exit 2\n'
            "while read -r a; do\n"
            '  printf "%s STREAM %s\\n%s DGRAM\\n%s RAW\\n" "$a" "$2" "$a" "$a"\n'
            'done <"$f"\n'
        )
        getent.chmod(0o755)
        self.runs = 0

    def env(self, **settings: str) -> dict[str, str]:
        self.runs += 1
        env = {
            "PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin",
            "NGINX_TMP_DIR": str(self.base / f"run{self.runs}"),
            "NGINX_STATIC_ROOT": str(self.static),
            "NGINX_HTTP_PORT": str(free_port()),
            "NGINX_STATUS_PORT": str(free_port()),
            "UPSTREAM_WATCH_INTERVAL": "1",
        }
        env.update(settings)
        return env

    def render(self, env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(ENTRYPOINT), "render"], env=env, user=NOBODY, group=NOBODY, extra_groups=[],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip


class Nginx:
    """One nginx (or the whole entrypoint) as ``nobody``, its stdout and stderr in files it owns.

    The files are chowned like runc chowns a container's stdio, so ``access_log /dev/stdout`` works.
    """

    def __init__(self, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.port = int(env["NGINX_HTTP_PORT"])
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout.log", logs / "stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            os.fchown(out.fileno(), NOBODY, NOBODY)
            os.fchown(err.fileno(), NOBODY, NOBODY)
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                user=NOBODY, group=NOBODY, extra_groups=[],
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_ready(self, port: int | None = None) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.stderr()}")
            return port_open(port or self.port)

        wait_for(ready, timeout=10, what="nginx listening")

    def stop(self, sig: int = signal.SIGQUIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    ws = Workspace()
    yield ws
    shutil.rmtree(ws.base, ignore_errors=True)


@pytest.fixture(scope="module")
def app() -> Iterator[StandIn]:
    with StandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def start_nginx(workspace: Workspace, app: StandIn):
    """Render with these settings (upstreams: the stand-in) and run the host's nginx on them."""
    started: list[Nginx] = []

    def start(**settings: str) -> Nginx:
        env = workspace.env(APP_HOST=HOST, APP_PORT=str(app.port), **settings)
        rendered = workspace.render(env)
        assert rendered.returncode == 0, rendered.stderr
        conf = Path(env["NGINX_TMP_DIR"]) / "conf" / "nginx.conf"
        prefix = env["NGINX_TMP_DIR"] + "/"
        argv = [NGINX, "-e", "stderr", "-p", prefix, "-c", str(conf), "-g", "daemon off;"]
        nginx = Nginx(argv, env, Path(env["NGINX_TMP_DIR"]) / "logs")
        started.append(nginx)
        nginx.wait_ready()
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


@pytest.fixture(scope="module")
def nginx(start_nginx) -> Nginx:
    """The default settings (rate limits too), except that the handshake limit is generous."""
    return start_nginx(WS_HANDSHAKE_RATE="100r/s", WS_HANDSHAKE_BURST="100")


@pytest.fixture
def client(nginx: Nginx) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nginx.url, timeout=10) as http:
        yield http


def raw_request(port: int, target: str, extra: str = "") -> tuple[int, str]:
    """Sends the request line exactly as given (no client-side normalisation of ``..``)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.decode("latin-1")
    return int(text.split(" ", 2)[1]), text


# --- Config and script checks ----------------------------------------------------------------------


def test_config_test_passes(workspace: Workspace):
    # Empty values, as compose passes `${VAR:-}` when the user set nothing, mean the default.
    env = workspace.env(REQUEST_BODY_MAX_BYTES="", WS_READ_TIMEOUT="", WS_HOST="")
    assert workspace.render(env).returncode == 0
    conf = Path(env["NGINX_TMP_DIR"]) / "conf" / "nginx.conf"
    argv = [NGINX, "-t", "-e", "stderr", "-p", env["NGINX_TMP_DIR"] + "/", "-c", str(conf)]
    check = Nginx(argv, env, Path(env["NGINX_TMP_DIR"]) / "logs")
    assert check.proc.wait(30) == 0, check.stderr()
    assert "test is successful" in check.stderr()
    assert "[warn]" not in check.stderr() and "[emerg]" not in check.stderr()
    rendered = "".join(p.read_text() for p in conf.parent.glob("*.conf"))
    assert "${" not in rendered  # every placeholder rendered
    assert "$remote_addr" in rendered  # nginx's own variables left alone
    assert "Strict-Transport-Security" not in "".join(
        line for line in rendered.splitlines() if "add_header" in line
    )
    assert "client_max_body_size 1048576;" in rendered
    assert "proxy_read_timeout 60s;" in rendered
    assert "worker_shutdown_timeout 20s;" in rendered
    assert "worker_connections 16384;" in rendered
    assert "worker_rlimit_nofile 16896;" in rendered  # the connections and a reserve of 512
    assert "rate=50r/s" in rendered and "burst=100 nodelay" in rendered
    assert "rate=10r/s" in rendered and "burst=20 nodelay" in rendered
    assert "limit_conn ws_conn 100;" in rendered
    assert "resolver 127.0.0.11 " in rendered
    assert "ssl_" not in (conf.parent / "server.conf").read_text()  # TLS off: no TLS server


def test_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    result = subprocess.run(
        ["shellcheck", "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"API_RATE": "fast"}, "API_RATE"),
        ({"REQUEST_BODY_MAX_BYTES": "1m"}, "REQUEST_BODY_MAX_BYTES"),
        ({"WS_READ_TIMEOUT": "20", "WS_PING_INTERVAL": "20"}, "WS_PING_INTERVAL"),
        ({"APP_HOST": "app; return 200"}, "APP_HOST"),
        ({"TLS": "1"}, "TLS_CERT_FILE"),
        ({"TLS": "yes"}, "TLS must be 0 or 1"),
        ({"NGINX_WORKER_PROCESSES": "many"}, "NGINX_WORKER_PROCESSES"),
        ({"NGINX_WORKER_CONNECTIONS": "lots"}, "NGINX_WORKER_CONNECTIONS must be a whole number"),
        ({"NGINX_WORKER_CONNECTIONS": "100"}, "NGINX_WORKER_CONNECTIONS must be at least 512"),
        ({"NGINX_STATUS_PORT": "status"}, "NGINX_STATUS_PORT must be a whole number"),
        ({"WS_CONN_PER_IP": "65536"}, "WS_CONN_PER_IP must be between 1 and 65535"),
        ({"WS_CONN_PER_IP": "0"}, "WS_CONN_PER_IP must be between 1 and 65535"),
        ({"NGINX_HTTP_PORT": "8090", "NGINX_STATUS_PORT": "8090"}, "NGINX_STATUS_PORT (8090) must differ"),
    ],
)
def test_bad_settings_are_refused(workspace: Workspace, settings, message):
    result = workspace.render(workspace.env(**settings))
    assert result.returncode == 64
    assert message in result.stderr


def test_worker_connections_beyond_the_open_files_limit_are_refused(workspace: Workspace):
    """nginx itself would only log an alert and run with fewer connections than configured."""
    env = workspace.env(NGINX_WORKER_CONNECTIONS="4096")
    entrypoint = shlex.quote(str(ENTRYPOINT))
    result = subprocess.run(
        ["sh", "-c", f"ulimit -n 4000 && exec sh {entrypoint} render"], env=env, user=NOBODY, group=NOBODY,
        extra_groups=[], capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 64
    assert "NGINX_WORKER_CONNECTIONS=4096 needs 4608 open files per worker" in result.stderr
    assert "hard limit of 4000" in result.stderr
    raised = subprocess.run(
        ["sh", "-c", f"ulimit -n 4608 && exec sh {entrypoint} render"], env=env, user=NOBODY, group=NOBODY,
        extra_groups=[], capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert raised.returncode == 0, raised.stderr


# --- The watcher's address set -> upstream servers -------------------------------------------------


def servers(*args: str) -> str:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "servers", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


def test_upstream_servers_one_line_per_address():
    assert servers("8000", "10.0.0.2", "10.0.0.10") == (
        "    server 10.0.0.2:8000 max_fails=1 fail_timeout=5s;\n"
        "    server 10.0.0.10:8000 max_fails=1 fail_timeout=5s;\n"
    )


def test_upstream_servers_placeholder_when_nothing_resolves():
    lines = servers("8000").splitlines()
    assert len(lines) == 1
    assert lines[0].strip().startswith("server 127.0.0.1:9 down;")


def test_rendered_upstreams_follow_dns(workspace: Workspace):
    (workspace.hosts / "app.render").write_text("10.0.0.10\n10.0.0.9\n10.0.0.10\n")
    env = workspace.env(APP_HOST="app.render", WS_HOST="ws.missing", APP_PORT="8000")
    assert workspace.render(env).returncode == 0
    upstreams = (Path(env["NGINX_TMP_DIR"]) / "conf" / "upstreams.conf").read_text()
    app_block = upstreams.split("upstream app {")[1].split("}")[0]
    ws_block = upstreams.split("upstream ws {")[1].split("}")[0]
    # sorted numerically, duplicates (getent's STREAM/DGRAM/RAW lines, repeated records) merged
    assert re.findall(r"^ +server (\S+) ", app_block, re.MULTILINE) == ["10.0.0.9:8000", "10.0.0.10:8000"]
    assert "keepalive 32;" in app_block
    assert re.findall(r"^ +server (\S+) (\S+);", ws_block, re.MULTILINE) == [("127.0.0.1:9", "down")]


@pytest.mark.parametrize(
    ("settings", "ws_upstream"),
    [
        ({"SERVER": "gunicorn"}, "10.0.0.20:8000"),  # WSGI: /ws/ goes to the sidecar
        ({"SERVER": "daphne"}, "10.0.0.10:8000"),  # carries its own WebSockets
        ({"SERVER": ""}, "10.0.0.10:8000"),  # unknown variant: the app
        ({"SERVER": "gunicorn", "WS_HOST": "app.t"}, "10.0.0.10:8000"),  # WS_HOST wins
    ],
)
def test_websocket_upstream_follows_the_variant(
    workspace: Workspace, settings: dict[str, str], ws_upstream: str
):
    (workspace.hosts / "app.t").write_text("10.0.0.10\n")
    (workspace.hosts / "ws.t").write_text("10.0.0.20\n")
    registry = str(SERVERS_FILE.parent / "registry.sh")  # compose mounts both into Nginx
    env = workspace.env(
        APP_HOST="app.t",
        SIDECAR_HOST="ws.t",
        SERVERS_FILE=str(SERVERS_FILE),
        SERVERS_REGISTRY=registry,
        **settings,
    )
    assert workspace.render(env).returncode == 0
    upstreams = (Path(env["NGINX_TMP_DIR"]) / "conf" / "upstreams.conf").read_text()
    ws_block = upstreams.split("upstream ws {")[1].split("}")[0]
    assert re.findall(r"^ +server (\S+) ", ws_block, re.MULTILINE) == [ws_upstream]


# --- Proxying --------------------------------------------------------------------------------------


def test_forwarding_headers_are_overwritten(client: httpx.Client, app: StandIn, nginx: Nginx):
    response = client.get(
        "/echo/forwarded",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6;proto=https",
            "X-Real-IP": "6.6.6.6",
            "X-Request-ID": "forged",
        },
    )
    assert response.status_code == 200
    seen = response.json()
    headers = [(name.lower(), value) for name, value in seen["headers"]]

    def values(name: str) -> list[str]:
        return [value for key, value in headers if key == name]

    assert values("x-forwarded-for") == ["127.0.0.1"]
    assert values("x-forwarded-proto") == ["http"]
    assert values("x-real-ip") == ["127.0.0.1"]
    assert values("forwarded") == []
    assert values("x-forwarded-host") == []
    assert values("host") == [f"127.0.0.1:{nginx.port}"]
    [request_id] = values("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.headers["x-request-id"] == request_id  # the same id, once, for the client
    assert values("connection") == []  # keepalive to the app
    assert seen["version"] == "HTTP/1.1"
    assert_security_headers(response)


def test_upstream_connections_are_kept_alive(client: httpx.Client, app: StandIn):
    for _ in range(3):
        assert client.get("/echo/keepalive").status_code == 200
    peers = {tuple(r["peer"]) for r in app.seen("/echo/keepalive")}
    assert len(peers) < 3


def test_security_headers_on_upstream_error_replace_the_apps(client: httpx.Client):
    response = client.get("/status/500")
    assert response.status_code == 500
    assert_security_headers(response)  # nginx's values, once: the app's copies are hidden
    assert response.headers.get_list("strict-transport-security") == ["max-age=60"]  # the app's, once


def test_access_log_is_json(client: httpx.Client, nginx: Nginx):
    client.get("/echo/logged", headers={"User-Agent": 'quote" test'})
    wait_for(lambda: "/echo/logged" in nginx.stdout(), timeout=5, what="access log line")
    line = next(line for line in nginx.stdout().splitlines() if "/echo/logged" in line)
    entry = json.loads(line)
    assert entry["method"] == "GET" and entry["uri"] == "/echo/logged" and entry["status"] == 200
    assert entry["protocol"] == "HTTP/1.1"
    assert entry["http_user_agent"] == 'quote" test'
    assert entry["upstream_status"] == "200"
    for key in ("time", "remote_addr", "body_bytes_sent", "request_time", "upstream_addr",
                "upstream_response_time", "upstream_connect_time", "request_id"):  # fmt: skip
        assert key in entry


def test_oversized_body_gets_413(client: httpx.Client, app: StandIn):
    response = client.post("/echo/big-body", content=b"x" * (1_048_576 + 1))
    assert response.status_code == 413
    assert_security_headers(response)
    assert app.seen("/echo/big-body") == []
    assert client.post("/echo/ok-body", content=b"x" * 1_048_576).json()["body_len"] == 1_048_576


def test_oversized_header_is_refused_by_nginx(nginx: Nginx, app: StandIn):
    status, text = raw_request(nginx.port, "/echo/big-header", f"X-Big: {'a' * 9000}\r\n")
    assert status in (400, 431, 494)
    assert app.seen("/echo/big-header") == []
    assert "X-Frame-Options: DENY" in text


def test_probes_are_proxied(client: httpx.Client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_nginx_health_is_answered_by_nginx(client: httpx.Client, app: StandIn):
    response = client.get("/nginx-health")
    assert response.status_code == 200
    assert response.text == "ok\n"
    assert app.seen("/nginx-health") == []


@pytest.mark.parametrize("target", ["/metrics", "/metrics?format=prometheus"])
def test_metrics_are_never_served_on_the_public_site(client: httpx.Client, app: StandIn, target: str):
    # The app's metrics live on their own port of the backend network (METRICS_PORT); Nginx answers
    # /metrics itself, so no route the app may ever get can expose them here.
    response = client.get(target)
    assert response.status_code == 404
    assert_security_headers(response)
    assert app.seen("/metrics") == []


def test_nginx_counters_are_served_on_the_status_port_only(client: httpx.Client, nginx: Nginx, app: StandIn):
    # The exporter of `make up MONITORING=1` reads stub_status on NGINX_STATUS_PORT, which compose
    # never publishes; on the site's port /stub_status is an ordinary path of the app.
    status = httpx.get(f"http://{HOST}:{nginx.env['NGINX_STATUS_PORT']}/stub_status", timeout=10)
    assert status.status_code == 200
    assert status.text.startswith("Active connections:"), status.text
    assert httpx.get(f"http://{HOST}:{nginx.env['NGINX_STATUS_PORT']}/", timeout=10).status_code == 404
    public = client.get("/stub_status")
    assert "Active connections" not in public.text
    assert app.seen("/stub_status") != [], "the site's /stub_status is the app's"


# --- Static files ----------------------------------------------------------------------------------


def test_static_hashed_file_is_cached_for_a_year(client: httpx.Client):
    response = client.get("/static/chat/chat.0123456789ab.css")
    assert response.status_code == 200
    assert response.text == "body { color: black; }\n"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"].startswith("text/css")
    assert_security_headers(response)


def test_static_unhashed_file_is_revalidated(client: httpx.Client):
    response = client.get("/static/chat/chat.css")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    again = client.get(
        "/static/chat/chat.css", headers={"If-Modified-Since": response.headers["last-modified"]}
    )
    assert again.status_code == 304


def test_static_404_has_security_headers_and_no_cache_header(client: httpx.Client, app: StandIn):
    response = client.get("/static/chat/missing.0123456789ab.css")
    assert response.status_code == 404
    assert_security_headers(response)
    assert "cache-control" not in response.headers
    assert app.seen("missing") == []  # served (or not) by nginx, never the app


def test_nginx_redirects_are_relative(nginx: Nginx):
    status, text = raw_request(nginx.port, "/static/chat")
    assert status == 301
    assert "\r\nLocation: /static/chat/\r\n" in text  # not http://host:8080/...


@pytest.mark.parametrize("target", ["/static/", "/static/chat/"])
def test_static_has_no_directory_listing(nginx: Nginx, target: str):
    status, text = raw_request(nginx.port, target)
    assert status in (403, 404)
    assert "chat.css" not in text


@pytest.mark.parametrize(
    "target",
    [
        "/static/../secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/chat/../../secret.txt",
        "/static/..%2f..%2fetc/passwd",
        "/static/../../etc/passwd",
        "/static../secret.txt",
        "/static/..%5csecret.txt",
    ],
)
def test_static_path_traversal_is_refused(nginx: Nginx, target: str):
    status, text = raw_request(nginx.port, target)
    assert status in (400, 404), text[:300]
    assert SECRET not in text


# --- Rate limits -----------------------------------------------------------------------------------


def test_api_rate_limit_returns_429(start_nginx, app: StandIn):
    limited = start_nginx(API_RATE="1r/m", API_BURST="5")
    with httpx.Client(base_url=limited.url, timeout=10) as http:
        statuses = [http.get("/api/limited").status_code for _ in range(12)]
        assert statuses[:6] == [200] * 6  # one at the rate, five more of burst
        assert statuses[6:] == [429] * 6
        refused = http.get("/api/limited")
        assert refused.status_code == 429
        assert_security_headers(refused)
        # Probes and pages are not limited.
        assert {http.get("/healthz").status_code for _ in range(20)} == {200}
        assert {http.get("/readyz").status_code for _ in range(20)} == {200}
    assert len(app.seen("/api/limited")) == 6


# --- WebSockets ------------------------------------------------------------------------------------


def test_websocket_upgrade_passes_through(nginx: Nginx):
    url = f"ws://{HOST}:{nginx.port}/ws/chat/lobby/"
    with ws_connect(
        url, open_timeout=5, close_timeout=5, additional_headers={"X-Forwarded-For": "6.6.6.6"}
    ) as ws:
        seen = json.loads(ws.recv(timeout=5))
        headers = {name.lower(): value for name, value in seen["headers"]}
        assert seen["target"] == "/ws/chat/lobby/"
        assert headers["upgrade"].lower() == "websocket"
        assert headers["connection"].lower() == "upgrade"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        # The client offered per-message deflate (websockets does by default, as browsers do):
        # Nginx does not pass the offer on, so no server compresses.
        assert "sec-websocket-extensions" not in headers
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send("x" * 70_000)  # bigger than any proxy buffer
        assert len(ws.recv(timeout=5)) == 70_000


def test_websocket_handshake_rate_limit_returns_429(start_nginx):
    limited = start_nginx(WS_HANDSHAKE_RATE="1r/m", WS_HANDSHAKE_BURST="2")
    url = f"ws://{HOST}:{limited.port}/ws/chat/lobby/"
    for _ in range(3):
        with ws_connect(url, open_timeout=5, close_timeout=5) as ws:
            ws.recv(timeout=5)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, open_timeout=5)
    assert refused.value.response.status_code == 429


def test_websocket_connections_per_ip_limit_returns_429(start_nginx):
    limited = start_nginx(WS_CONN_PER_IP="2")
    url = f"ws://{HOST}:{limited.port}/ws/chat/lobby/"
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(ws_connect(url, open_timeout=5, close_timeout=5)).recv(timeout=5)
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, open_timeout=5)
        assert refused.value.response.status_code == 429
    # Once those are closed, a new one is welcome again.
    wait_for(lambda: _ws_accepted(url), timeout=5, what="a WebSocket after the others closed")


def _ws_accepted(url: str) -> bool:
    try:
        with ws_connect(url, open_timeout=5, close_timeout=5) as ws:
            ws.recv(timeout=5)
    except InvalidStatus:
        return False
    return True


# --- TLS -------------------------------------------------------------------------------------------


def test_tls(workspace: Workspace, start_nginx, app: StandIn):
    tls_dir = workspace.base / "tls"
    tls_dir.mkdir(exist_ok=True)
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    key.chmod(0o644)  # test only: the unprivileged nginx must read it
    https_port = free_port()
    tls = start_nginx(
        TLS="1", TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key),
        NGINX_HTTPS_PORT=str(https_port), HTTPS_PUBLIC_PORT="8443",
    )  # fmt: skip
    tls.wait_ready(https_port)
    conf = (Path(tls.env["NGINX_TMP_DIR"]) / "conf" / "server.conf").read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf

    # Plain HTTP redirects, except the probes.
    with httpx.Client(base_url=tls.url, timeout=10) as http:
        redirect = http.get("/echo/page?x=1")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://127.0.0.1:8443/echo/page?x=1"
        assert_security_headers(redirect)
        assert http.get("/healthz").status_code == 200

    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        context.minimum_version = context.maximum_version = version
        with httpx.Client(base_url=f"https://{HOST}:{https_port}", verify=context, timeout=10) as https:
            response = https.get("/echo/tls")
            assert response.status_code == 200
            assert response.extensions["network_stream"].get_extra_info("ssl_object").version() == (
                "TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
            )
            headers = {name.lower(): value for name, value in response.json()["headers"]}
            assert headers["x-forwarded-proto"] == "https"
            assert_security_headers(response)
            assert response.headers.get_list("strict-transport-security") == ["max-age=60"]  # the app's only


# --- The entrypoint: start, follow DNS, shut down gracefully ---------------------------------------


def test_entrypoint_follows_dns_and_stops_gracefully(workspace: Workspace, app: StandIn):
    name = "app.watch"
    hosts_file = workspace.hosts / name
    env = workspace.env(APP_HOST=name, APP_PORT=str(app.port), NGINX_SHUTDOWN_TIMEOUT="3")
    entrypoint = Nginx(["sh", str(ENTRYPOINT)], env, Path(env["NGINX_TMP_DIR"] + "-logs"))
    with contextlib.ExitStack() as stack:
        stack.callback(entrypoint.stop, signal.SIGKILL)
        stack.callback(lambda: hosts_file.unlink(missing_ok=True))
        entrypoint.wait_ready()
        # A new connection per request: a reload closes idle keep-alive connections, and a request
        # sent on one at that instant fails before any answer (a client retries that; not the point here).
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=entrypoint.url, timeout=10, limits=no_keepalive) as http:
            # Nothing resolves yet: nginx runs anyway and answers 502 at once.
            started = time.monotonic()
            assert http.get("/echo/watch").status_code == 502
            assert time.monotonic() - started < 1

            # The app appears in DNS: within an interval or two, requests reach it.
            hosts_file.write_text("127.0.0.1\n")
            wait_for(lambda: http.get("/echo/watch").status_code == 200, timeout=10, what="upstream added")
            assert "reloading" in entrypoint.stderr()

            # An open WebSocket survives a reload (the old worker keeps its connections).
            url = f"ws://{HOST}:{entrypoint.port}/ws/chat/lobby/"
            ws = stack.enter_context(ws_connect(url, open_timeout=5, close_timeout=5))
            ws.recv(timeout=5)

            # The app disappears (recreated): after two empty answers in a row, 502 again...
            hosts_file.unlink()
            wait_for(lambda: http.get("/echo/watch").status_code == 502, timeout=10, what="upstream removed")
            # ... and comes back.
            hosts_file.write_text("127.0.0.1\n")
            wait_for(lambda: http.get("/echo/watch").status_code == 200, timeout=10, what="upstream back")
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
            # The old worker closes it NGINX_SHUTDOWN_TIMEOUT (3s) after the reload; the client
            # reconnects to the new workers.
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            ws = stack.enter_context(ws_connect(url, open_timeout=5, close_timeout=5))
            ws.recv(timeout=5)

        assert healthcheck(env).returncode == 0
        pid = int((Path(env["NGINX_TMP_DIR"]) / "nginx.pid").read_text())
        stopped = time.monotonic()
        status = entrypoint.stop(signal.SIGTERM)
        assert status == 0, entrypoint.stderr()
        # Graceful: the open WebSocket held nginx until NGINX_SHUTDOWN_TIMEOUT (3s), not longer.
        assert 2 <= time.monotonic() - stopped < 10
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert "graceful shutdown" in entrypoint.stderr()
        assert healthcheck(env).returncode == 1


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "healthcheck"], env=env, user=NOBODY, group=NOBODY, extra_groups=[],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
