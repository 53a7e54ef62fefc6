"""What Docker says about the running containers, and what their processes say about themselves.

Each check takes one container and returns its problems (an empty list when it passes), so the test
can report every container that fails a rule, not only the first.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.security.stack import BIND_ADDRESS, SECRETS_DIR, Stack, docker

PUBLISHER = "nginx"  # the only service that publishes a port


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    inspect: dict[str, Any]
    status: str  # /proc/1/status of the running container ("" once it has exited)
    mountinfo: str  # /proc/1/mountinfo
    uids: list[int]  # the real uid of every process in it, as the host sees them

    @property
    def running(self) -> bool:
        return bool(self.inspect["State"]["Running"])


def _proc_status_field(status: str, field: str) -> list[str]:
    match = re.search(rf"^{field}:\s+(.*)$", status, re.MULTILINE)
    return match.group(1).split() if match else []


def containers(stack: Stack) -> list[Container]:
    """Every container of the stack, the finished release task (migrate) included."""
    found = []
    for container in stack.containers(running=False):
        inspect = stack.inspect(container)
        name = inspect["Name"].lstrip("/")
        status = mountinfo = ""
        uids: list[int] = []
        if inspect["State"]["Running"]:
            status = docker("exec", name, "cat", "/proc/1/status").stdout
            mountinfo = docker("exec", name, "cat", "/proc/1/mountinfo").stdout
            top = docker("top", name, "-eo", "pid,uid").stdout.splitlines()[1:]  # below the heading
            uids = [int(line.split()[1]) for line in top]
        service = inspect["Config"]["Labels"]["com.docker.compose.service"]
        found.append(Container(service, name, inspect, status, mountinfo, uids))
    return found


# --- The checks -------------------------------------------------------------------------------------


def non_root(c: Container) -> list[str]:
    user = c.inspect["Config"]["User"]
    problems = [] if user and user.split(":")[0] not in ("0", "root") else [f"runs as user {user!r}"]
    if c.running:
        if not c.uids or 0 in c.uids:
            problems.append(f"process uids {c.uids}")
        if "0" in _proc_status_field(c.status, "Uid"):
            problems.append("PID 1 has uid 0")
    return problems


def read_only_root(c: Container) -> list[str]:
    problems = [] if c.inspect["HostConfig"]["ReadonlyRootfs"] else ["root filesystem is writable"]
    if c.running:
        root = [line.split() for line in c.mountinfo.splitlines() if line.split()[3:5] == ["/", "/"]]
        if not root or "ro" not in root[0][5].split(","):
            problems.append(f"/ is mounted {root[0][5] if root else '?'}")
    # Writable places are tmpfs or named volumes; nothing from the host is mounted writable.
    for mount in c.inspect["Mounts"]:
        if mount["Type"] == "bind" and mount["RW"]:
            problems.append(f"writable bind mount {mount['Source']} -> {mount['Destination']}")
    return problems


def no_capabilities(c: Container) -> list[str]:
    host = c.inspect["HostConfig"]
    problems = []
    if host["CapDrop"] != ["ALL"] or host["CapAdd"]:
        problems.append(f"cap_drop {host['CapDrop']}, cap_add {host['CapAdd']}")
    if host["Privileged"]:
        problems.append("privileged")
    if c.running:
        for field in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
            if _proc_status_field(c.status, field) != ["0000000000000000"]:
                problems.append(f"{field} {_proc_status_field(c.status, field)}")
    return problems


def no_new_privileges(c: Container) -> list[str]:
    options = c.inspect["HostConfig"]["SecurityOpt"] or []
    problems = (
        [] if any(o in ("no-new-privileges", "no-new-privileges:true") for o in options) else [str(options)]
    )
    if c.running and _proc_status_field(c.status, "NoNewPrivs") != ["1"]:
        problems.append(f"NoNewPrivs {_proc_status_field(c.status, 'NoNewPrivs')}")
    return problems


def memory_and_pids_limits(c: Container) -> list[str]:
    host = c.inspect["HostConfig"]
    problems = [] if host["Memory"] > 0 else ["no memory limit"]
    if not host["PidsLimit"] or host["PidsLimit"] <= 0:
        problems.append("no pids limit")
    return problems


def published_ports(stack: Stack) -> Callable[[Container], list[str]]:
    """Only Nginx publishes, only the stack's ports, only on the configured address."""
    expected = {str(stack.http_port)} | ({str(stack.https_port)} if stack.tls else set())

    def check(c: Container) -> list[str]:
        bindings = [
            b for spec in (c.inspect["HostConfig"]["PortBindings"] or {}).values() for b in spec or []
        ]
        if c.service != PUBLISHER:
            return [f"publishes {bindings}"] if bindings else []
        problems = [
            f"published on {b['HostIp'] or 'every address'}" for b in bindings if b["HostIp"] != BIND_ADDRESS
        ]
        if {b["HostPort"] for b in bindings} != expected:
            problems.append(f"ports {sorted(b['HostPort'] for b in bindings)}, expected {sorted(expected)}")
        return problems

    return check


def private_network(stack: Stack) -> Callable[[Container], list[str]]:
    """Everything but Nginx is only on the backend network, which has no route out."""
    backend = f"{stack.project}_backend"

    def check(c: Container) -> list[str]:
        networks = set(c.inspect["NetworkSettings"]["Networks"])
        if c.service == PUBLISHER:
            return [] if backend in networks else [f"Nginx is not on {backend}"]
        problems = [] if networks == {backend} else [f"on networks {sorted(networks)}"]
        if docker("network", "inspect", "-f", "{{.Internal}}", backend).stdout.strip() != "true":
            problems.append(f"{backend} is not internal")
        return problems

    return check


def no_docker_socket(c: Container) -> list[str]:
    return [m["Source"] for m in c.inspect["Mounts"] if m["Source"].endswith("docker.sock")]


# --- Secrets ----------------------------------------------------------------------------------------

# An environment or build variable that looks like it carries a secret, with a value in it. *_FILE
# names a file (the way secrets are passed here), which is fine.
SECRET_ASSIGNMENT = re.compile(
    r"\b(?P<name>[A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE_KEY|API_KEY)(?:_[A-Z0-9]+)*)=(?P<value>[^\s\"']+)"
)
# Files that hold secrets of this project, wherever they would end up.
SECRET_FILE_NAMES = {".env", "django_secret_key", "postgres_password", "tls_private_key.pem", "db.sqlite3"}


def secret_values() -> dict[str, bytes]:
    """The generated secrets of this checkout (`make secrets`, `make tls-cert`): what must never leak."""
    values = {}
    for path in sorted(SECRETS_DIR.iterdir()):
        text = path.read_text().strip()
        if "PRIVATE KEY" in text:
            # The key's base64 body: the part that is the secret, in any file that copied it.
            text = max(text.splitlines(), key=len)
        elif "CERTIFICATE" in text:
            continue  # public
        values[path.name] = text.encode()
    return values


def secret_assignments(text: str) -> list[str]:
    return [m.group(0) for m in SECRET_ASSIGNMENT.finditer(text) if not m.group("name").endswith("_FILE")]


def _files(archive: tarfile.TarFile, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """Every regular file in a tar archive, descending into layer archives (docker save)."""
    for member in archive:
        if not member.isfile():
            continue
        handle = archive.extractfile(member)
        data = handle.read() if handle else b""
        path = prefix + member.name
        if data[257:262] == b"ustar":  # a layer, itself a tar archive
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                yield from _files(layer, path + ":/")
        else:
            yield path, data


def secrets_in_archive(command: list[str], secrets: dict[str, bytes]) -> list[str]:
    """Runs a command that writes a tar archive (docker save, docker export) and lists every file in it
    that holds one of the secrets or has the name of a secret file."""
    findings = []
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for path, data in _files(archive):
                if Path(path.rsplit("/", 1)[-1]).name in SECRET_FILE_NAMES and data:
                    findings.append(f"{path}: a secret file")
                findings += [f"{path}: {name}" for name, value in secrets.items() if value in data]
    assert process.returncode == 0, f"{command} failed"
    return findings


def problems_of(check: Callable[[Container], list[str]], found: Iterable[Container]) -> dict[str, list[str]]:
    return {c.name: problems for c in found if (problems := check(c))}
