"""deploy/systemd/: the units pass `systemd-analyze verify`, and their command lines really serve.

systemd is not PID 1 here, so the units themselves are not started. Instead:

* ``systemd-analyze verify --root`` checks them against a throwaway root that holds the host's
  systemd unit tree and this repository's deploy/ at /opt/stack/deploy, so every ExecStart must
  name a real start file (an instance without one fails, which is checked too);
* each variant's ExecStart runs with the unit's own Environment= lines (the unit file is parsed;
  /opt/stack and /opt/venv are mapped to this repository and its .venv), the secret key handed
  over as a credential file as LoadCredential= does, SQLite in a temp dir migrated by the release
  unit's command line; it must answer /healthz, then exit 0 within 25 s of a SIGTERM sent to the
  main process only (KillMode=mixed);
* socket activation runs through ``systemd-socket-activate``, which passes LISTEN_FDS/LISTEN_PID
  like systemd does;
* nginx-site.conf is checked with ``nginx -t`` and then served by the host's nginx in front of a
  running server (ports, certificate and static paths substituted in a temp copy).
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stackctl import free_port, registry
from tests.deploy.helpers import DEPLOY, REPO, VENV_BIN, http_get, log_tail, running, wait_for_http

UNITS = DEPLOY / "systemd"
SERVICE_TEMPLATE = UNITS / "realtime-django@.service"
RELEASE_SERVICE = UNITS / "realtime-django-release.service"
SOCKET_UNIT = UNITS / "realtime-django.socket"
NGINX_SITE = UNITS / "nginx-site.conf"
VARIANTS = list(registry())
# The servers whose start files work with an inherited socket (see realtime-django.socket).
SOCKET_ACTIVATED = ["gunicorn", "gunicorn-asgi"]

START_TIMEOUT = 60.0  # seconds for a server to answer /healthz
STOP_TIMEOUT = 25.0  # seconds for a server to exit after SIGTERM (the unit allows 30)

SECRET_KEY = "test-only-secret-key-for-the-systemd-tests-0123456789-abcdefghijklmnop"


# --- Unit files ------------------------------------------------------------------------------------


def unit_settings(path: Path, section: str = "Service") -> list[tuple[str, str]]:
    """The (key, value) lines of one section of a unit file, in order."""
    settings: list[tuple[str, str]] = []
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            settings.append((key.strip(), value.strip()))
    return settings


def setting(path: Path, key: str, section: str = "Service") -> str:
    values = [value for name, value in unit_settings(path, section) if name == key]
    assert len(values) == 1, f"{path.name}: expected one {key}=, got {values}"
    return values[0]


class HostLayout:
    """Where the unit's /opt/stack, /opt/venv, %d and %t land in this test."""

    def __init__(self, tmp: Path) -> None:
        self.credentials = tmp / "credentials"
        self.runtime = tmp / "run"
        self.static = tmp / "static"
        self.tmpdir = tmp / "tmp"
        for folder in (self.credentials, self.runtime, self.static, self.tmpdir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.credentials / "django_secret_key").write_text(SECRET_KEY + "\n")
        (self.credentials / "database_password").write_text("")

    def resolve(self, value: str, instance: str) -> str:
        value = (
            value.replace("%i", instance)
            .replace("%d", str(self.credentials))
            .replace("%t", str(self.runtime))
        )
        value = value.replace("%%", "%")
        for unit_path, here in (
            ("/opt/stack/app", REPO / "app"),
            ("/opt/stack/deploy", DEPLOY),
            ("/opt/stack/static", self.static),
            ("/opt/venv/bin", VENV_BIN),
        ):
            value = value.replace(unit_path, str(here))
        assert "%" not in value, f"unhandled systemd specifier in {value!r}"
        return value

    def environment(self, unit: Path, instance: str, **overrides: str) -> dict[str, str]:
        """The process environment systemd builds from the unit's Environment= lines."""
        env = {"CREDENTIALS_DIRECTORY": str(self.credentials), "TMPDIR": str(self.tmpdir)}
        for key, value in unit_settings(unit):
            if key == "Environment":
                for assignment in shlex.split(value):
                    name, _, val = assignment.partition("=")
                    env[name] = self.resolve(val, instance)
        for directory in [v for k, v in unit_settings(unit) if k == "RuntimeDirectory"]:
            (self.runtime / self.resolve(directory, instance)).mkdir(parents=True, exist_ok=True)
        env.update(overrides)
        return env

    def exec_start(self, unit: Path, instance: str) -> list[str]:
        return [self.resolve(part, instance) for part in shlex.split(setting(unit, "ExecStart"))]

    def working_directory(self, unit: Path, instance: str) -> Path:
        return Path(self.resolve(setting(unit, "WorkingDirectory"), instance))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> HostLayout:
    return HostLayout(tmp_path_factory.mktemp("systemd-host"))


@pytest.fixture(scope="module")
def database(layout: HostLayout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated by the release unit's own command line."""
    if not (VENV_BIN / "python").exists():
        pytest.skip(f"the project virtualenv is missing: {VENV_BIN} (make venv)")
    sqlite = tmp_path_factory.mktemp("sqlite") / "db.sqlite3"
    env = layout.environment(RELEASE_SERVICE, "", DJANGO_HTTPS="0", SQLITE_PATH=str(sqlite))
    result = subprocess.run(
        layout.exec_start(RELEASE_SERVICE, ""),
        cwd=layout.working_directory(RELEASE_SERVICE, ""),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sqlite.exists()
    return sqlite


def server_environment(layout: HostLayout, variant: str, database: Path, port: int) -> dict[str, str]:
    return layout.environment(
        SERVICE_TEMPLATE,
        variant,
        DJANGO_HTTPS="0",
        SQLITE_PATH=str(database),
        PORT=str(port),
        WEB_CONCURRENCY="1",
    )


def stop_and_wait(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM to the main process only (KillMode=mixed); its exit status, or None if it hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None


# --- systemd-analyze ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root for `systemd-analyze --root`: the host's unit tree, our units, deploy/ in /opt/stack."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    system_units = Path("/usr/lib/systemd/system")
    if not (system_units / "sysinit.target").exists():
        pytest.skip("no systemd unit tree at /usr/lib/systemd/system")
    root = tmp_path_factory.mktemp("unit-root")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in (SERVICE_TEMPLATE, RELEASE_SERVICE, SOCKET_UNIT):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    shutil.copytree(DEPLOY, root / "opt/stack/deploy", symlinks=True)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "unit",
    [f"realtime-django@{variant}.service" for variant in VARIANTS]
    + ["realtime-django-release.service", "realtime-django.socket"],
)
def test_unit_verifies(unit_root: Path, unit: str) -> None:
    result = analyze(unit_root, "verify", unit)
    # verify exits 0 on unknown keys and bad values too (it only warns): any output is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_verify_fails_for_a_variant_without_start_file(unit_root: Path) -> None:
    """The check above is not vacuous: an instance whose start file does not exist is an error."""
    result = analyze(unit_root, "verify", "realtime-django@no-such-server.service")
    assert result.returncode != 0
    assert "no-such-server.sh" in result.stderr


@pytest.mark.parametrize("unit", ["realtime-django@uvicorn.service", "realtime-django-release.service"])
def test_unit_hardening_exposure(unit_root: Path, unit: str) -> None:
    """`systemd-analyze security`: overall exposure at most 2.0 ("OK"); the threshold is x10."""
    result = analyze(unit_root, "security", "--offline=true", "--threshold=20", unit)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_units_carry_the_required_settings() -> None:
    service = dict(unit_settings(SERVICE_TEMPLATE))
    assert service["ExecStart"] == "/opt/stack/deploy/servers/%i.sh"
    assert service["WorkingDirectory"] == "/opt/stack/app"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) == 30
    assert service["DynamicUser"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    environment = " ".join(v for k, v in unit_settings(SERVICE_TEMPLATE) if k == "Environment")
    for assignment in ("SERVER=%i", "PYTHONPATH=/opt/stack/app", "PATH=/opt/venv/bin:/usr/bin:/bin"):
        assert assignment in shlex.split(environment)
    assert "DJANGO_SECRET_KEY_FILE=%d/django_secret_key" in shlex.split(environment)
    loads = [v for k, v in unit_settings(SERVICE_TEMPLATE) if k == "LoadCredential"]
    assert any(v.startswith("django_secret_key:") for v in loads)
    # The socket serves a variant whose start file takes an inherited socket.
    target = setting(SOCKET_UNIT, "Service", section="Socket")
    assert target in {f"realtime-django@{name}.service" for name in SOCKET_ACTIVATED}
    assert setting(RELEASE_SERVICE, "ExecStart") == "/opt/stack/deploy/entrypoint.sh release"


# --- The units' command lines, run --------------------------------------------------------------------


def assert_clean_stop(variant: str, returncode: int | None, log: Path) -> None:
    """Exit status 0 after SIGTERM, within STOP_TIMEOUT.

    One exception, still a clean stop for systemd: uvicorn as a single process (WEB_CONCURRENCY=1)
    re-raises the SIGTERM it caught once its graceful shutdown is complete, so it ends killed by
    SIGTERM, which systemd counts as success by default (SuccessExitStatus=, systemd.service(5))
    and which Restart=on-failure does not restart. With WEB_CONCURRENCY > 1 its supervisor exits 0.
    """
    assert returncode is not None, f"still running {STOP_TIMEOUT} s after SIGTERM\n{log_tail(log)}"
    if variant == "uvicorn" and returncode == -signal.SIGTERM:
        assert "Finished server process" in log.read_text(), log_tail(log)
        return
    assert returncode == 0, f"exit status {returncode} after SIGTERM\n{log_tail(log)}"


@pytest.mark.parametrize("access_log", ["", "1"], ids=["default", "SERVER_ACCESS_LOG=1"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_unit_command_serves_and_stops_cleanly(
    variant: str, access_log: str, layout: HostLayout, database: Path, tmp_path: Path
) -> None:
    """The unit's start command serves and stops; it logs requests only with SERVER_ACCESS_LOG=1
    (by default Nginx's access log is the one line per request)."""
    port = free_port()
    env = {**server_environment(layout, variant, database, port), "SERVER_ACCESS_LOG": access_log}
    log = tmp_path / f"{variant}.log"
    argv = layout.exec_start(SERVICE_TEMPLATE, variant)
    with running(argv, env, layout.working_directory(SERVICE_TEMPLATE, variant), log) as proc:
        status = wait_for_http(port, "/healthz", proc, time.monotonic() + START_TIMEOUT)
        assert status == 200, f"/healthz answered {status}\n{log_tail(log)}"
        code, body = http_get(port, "/api/whoami")
        assert code == 200 and f'"server": "{variant}"'.encode() in body, body
        assert_clean_stop(variant, stop_and_wait(proc), log)
    assert ("/api/whoami" in log.read_text(errors="replace")) == (access_log == "1"), log_tail(log)


def test_uvicorn_with_workers_exits_zero(layout: HostLayout, database: Path, tmp_path: Path) -> None:
    """The production setting (WEB_CONCURRENCY=2 in env.example): uvicorn's supervisor exits 0."""
    port = free_port()
    env = server_environment(layout, "uvicorn", database, port)
    env["WEB_CONCURRENCY"] = "2"
    log = tmp_path / "uvicorn-workers.log"
    argv = layout.exec_start(SERVICE_TEMPLATE, "uvicorn")
    with running(argv, env, layout.working_directory(SERVICE_TEMPLATE, "uvicorn"), log) as proc:
        status = wait_for_http(port, "/healthz", proc, time.monotonic() + START_TIMEOUT)
        assert status == 200, f"/healthz answered {status}\n{log_tail(log)}"
        returncode = stop_and_wait(proc)
        assert returncode == 0, f"exit status {returncode} after SIGTERM\n{log_tail(log)}"


# --- Socket activation ------------------------------------------------------------------------------


def socket_activate(port: int, env: dict[str, str], argv: list[str]) -> list[str]:
    """systemd-socket-activate passes only the variables given with -E, as systemd would."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is missing (apt-get install systemd)")
    setenv = [f"--setenv={name}={value}" for name, value in env.items()]
    return [tool, f"--listen=127.0.0.1:{port}", *setenv, *argv]


def test_socket_unit_listens_on_loopback() -> None:
    assert setting(SOCKET_UNIT, "ListenStream", section="Socket").startswith("127.0.0.1:")


@pytest.mark.parametrize("variant", SOCKET_ACTIVATED)
def test_socket_activation(variant: str, layout: HostLayout, database: Path, tmp_path: Path) -> None:
    port = free_port()
    # PORT differs from the socket's port: the server must use the inherited socket, not bind.
    env = server_environment(layout, variant, database, free_port())
    log = tmp_path / f"{variant}-activated.log"
    argv = socket_activate(port, env, layout.exec_start(SERVICE_TEMPLATE, variant))
    with running(argv, os.environ.copy(), layout.working_directory(SERVICE_TEMPLATE, variant), log) as proc:
        # The first connection makes systemd-socket-activate exec the unit's command line.
        status = wait_for_http(port, "/healthz", proc, time.monotonic() + START_TIMEOUT)
        assert status == 200, f"/healthz answered {status}\n{log_tail(log)}"
        assert f"Listening at: http://127.0.0.1:{port}" in log.read_text(), log_tail(log)
        assert_clean_stop(variant, stop_and_wait(proc), log)


def test_socket_activation_is_not_for_uvicorn(layout: HostLayout, database: Path, tmp_path: Path) -> None:
    """Why the socket names a gunicorn variant: uvicorn's start file binds the port itself."""
    port = free_port()
    env = server_environment(layout, "uvicorn", database, port)
    log = tmp_path / "uvicorn-activated.log"
    argv = socket_activate(port, env, layout.exec_start(SERVICE_TEMPLATE, "uvicorn"))
    with running(argv, os.environ.copy(), layout.working_directory(SERVICE_TEMPLATE, "uvicorn"), log) as proc:
        wait_for_http(port, "/healthz", proc, time.monotonic() + 5)  # triggers the exec
        try:
            returncode = proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = None
        assert returncode not in (0, None), log_tail(log)
        assert "address already in use" in log.read_text().lower(), log_tail(log)


# --- Nginx site ------------------------------------------------------------------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "fullchain.pem", folder / "privkey.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class NginxSite:
    """nginx-site.conf in a temp copy: loopback ports, a test certificate, a test static root."""

    def __init__(self, tmp: Path, http_port: int, https_port: int, app_port: int) -> None:
        if shutil.which("nginx") is None:
            pytest.skip("nginx is missing (apt-get install nginx-light)")
        self.tmp = tmp
        self.http_port, self.https_port = http_port, https_port
        cert, key = self_signed_certificate(tmp)
        self.static_root = tmp / "stack"
        static = self.static_root / "static" / "chat"
        static.mkdir(parents=True)
        (static / "site.css").write_text("body { color: black; }\n")
        (static / "site.0123456789ab.css").write_text("body { color: black; }\n")
        site = NGINX_SITE.read_text()
        substitutions = [
            (r"listen \[::\]:\d+[^;]*;\n", ""),
            (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
            (r"listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl"),
            (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{app_port};"),
            (r"/etc/letsencrypt/live/chat\.example\.com/fullchain\.pem", str(cert)),
            (r"/etc/letsencrypt/live/chat\.example\.com/privkey\.pem", str(key)),
            (r"root /opt/stack;", f"root {self.static_root};"),
        ]
        for pattern, replacement in substitutions:
            site, count = re.subn(pattern, replacement, site)
            assert count, f"nginx-site.conf no longer contains {pattern!r}"
        (tmp / "site.conf").write_text(site)
        # The stand-in for Debian's /etc/nginx/nginx.conf, which includes sites inside http {}.
        user = "user root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
"""
        )

    def argv(self, *extra: str) -> list[str]:
        return [
            "nginx",
            "-p",
            str(self.tmp),
            "-e",
            str(self.tmp / "error.log"),
            "-c",
            str(self.tmp / "nginx.conf"),
            *extra,
        ]


def test_nginx_site_syntax(tmp_path: Path) -> None:
    site = NginxSite(tmp_path, free_port(), free_port(), free_port())
    result = subprocess.run(site.argv("-t"), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr + (tmp_path / "error.log").read_text()


@pytest.fixture
def proxied_uvicorn(layout: HostLayout, database: Path, tmp_path: Path) -> Iterator[NginxSite]:
    """uvicorn's unit command line behind nginx-site.conf, with DJANGO_HTTPS=1 as in production."""
    app_port = free_port()
    env = server_environment(layout, "uvicorn", database, app_port)
    env["DJANGO_HTTPS"] = "1"
    env["TRUSTED_PROXIES"] = "127.0.0.1/32"
    site = NginxSite(tmp_path, free_port(), free_port(), app_port)
    with running(
        layout.exec_start(SERVICE_TEMPLATE, "uvicorn"),
        env,
        layout.working_directory(SERVICE_TEMPLATE, "uvicorn"),
        tmp_path / "uvicorn.log",
    ) as app:
        status = wait_for_http(app_port, "/healthz", app, time.monotonic() + START_TIMEOUT)
        assert status == 200, log_tail(tmp_path / "uvicorn.log")
        with running(site.argv(), os.environ.copy(), tmp_path, tmp_path / "nginx.log") as nginx:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (tmp_path / "nginx.pid").exists():
                assert nginx.poll() is None, log_tail(tmp_path / "error.log")
                time.sleep(0.1)
            yield site
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=15)
        stop_and_wait(app)


def test_nginx_site_proxies_http_static_and_websockets(proxied_uvicorn: NginxSite) -> None:
    site = proxied_uvicorn
    base = f"https://127.0.0.1:{site.https_port}"
    with httpx.Client(verify=False, timeout=5) as client:  # the test's self-signed certificate
        # Plain HTTP redirects to https.
        response = client.get(f"http://127.0.0.1:{site.http_port}/api/ping")
        assert response.status_code == 301
        assert response.headers["location"].startswith("https://")
        # Through nginx the app sees https (X-Forwarded-Proto from a trusted proxy): no redirect.
        response = client.get(f"{base}/api/ping")
        assert response.status_code == 200, response.text
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers.get("strict-transport-security"), "Django's HSTS header"
        assert "x-request-id" in response.headers
        # Static files from disk, hashed names cached for a year.
        response = client.get(f"{base}/static/chat/site.css")
        assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
        response = client.get(f"{base}/static/chat/site.0123456789ab.css")
        assert response.status_code == 200 and "immutable" in response.headers["cache-control"]

    from websockets.sync.client import connect

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with connect(
        f"wss://127.0.0.1:{site.https_port}/ws/echo/", ssl=context, origin=base, open_timeout=10
    ) as ws:
        ws.send('{"message": "through nginx"}')
        assert "through nginx" in ws.recv(timeout=10)
