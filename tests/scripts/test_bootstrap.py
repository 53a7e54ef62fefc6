"""scripts/bootstrap.sh decides what a machine lacks and what to do about it: each case below runs it
on a fake machine (fake docker, dockerd, docker-compose, apt-get, dpkg-query, id and sudo on a PATH
that holds nothing else) and checks what it did and said."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The real tools the script uses; everything Docker- or package-related is a fake.
REAL_TOOLS = [
    "bash",
    "sh",
    "env",
    "cat",
    "sed",
    "awk",
    "grep",
    "head",
    "tr",
    "cut",
    "mkdir",
    "dirname",
    "seq",
    "sleep",
    "timeout",
    "nohup",
    "setsid",
    "touch",
    "rm",
    "cp",
]
DEBIAN = 'ID=debian\nVERSION_ID="12"\n'
FEDORA = 'ID=fedora\nID_LIKE=""\n'

FAKE_DOCKER = r"""#!/bin/bash
echo "docker $*" >> "$FAKE/calls"
case $1 in
    info) [ -e "$FAKE/daemon" ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; } ;;
    compose) [ -e "$FAKE/compose-v2" ] && [ "$2" = version ] ;;
    image) [ -e "$FAKE/images/${3//\//_}" ] ;;
    pull)
        [ -e "$FAKE/registry" ] || { echo "dial tcp: lookup registry-1.docker.io: no such host" >&2; exit 1; }
        touch "$FAKE/images/${3//\//_}" ;;
    *) exit 0 ;;
esac
"""
FAKE_DOCKERD = """#!/bin/bash
echo "dockerd $*" >> "$FAKE/calls"
touch "$FAKE/daemon"
"""
FAKE_COMPOSE_V1 = """#!/bin/bash
echo "docker-compose $*" >> "$FAKE/calls"
[ "$1 $2" = "version --short" ] && echo "{version}"
"""
# apt-get "installs" a package by marking it for dpkg-query and, for Docker's, putting its fakes on PATH.
FAKE_APT = r"""#!/bin/bash
echo "apt-get $*" >> "$FAKE/calls"
[ "$1" = install ] || exit 0
for package in "$@"; do
    case $package in -*|install) continue ;; esac
    touch "$FAKE/dpkg/$package"
    case $package in
        docker.io) cp "$FAKE/templates/docker" "$FAKE/templates/dockerd" "$FAKE/bin/" ;;
        docker-compose) cp "$FAKE/templates/docker-compose-1.29" "$FAKE/bin/docker-compose" ;;
    esac
done
"""
FAKE_DPKG_QUERY = """#!/bin/bash
[ -e "$FAKE/dpkg/${@: -1}" ] && echo "install ok installed"
"""
FAKE_DPKG = """#!/bin/bash
echo "dpkg $*" >> "$FAKE/calls"
"""
FAKE_ID = """#!/bin/bash
echo "${FAKE_UID:-0}"
"""
FAKE_SUDO = """#!/bin/bash
echo "sudo $*" >> "$FAKE/calls"
exec "$@"
"""
FAKE_SERVICE = """#!/bin/bash
echo "service $*" >> "$FAKE/calls"
"""
FAKE_UPDATE_RC_D = """#!/bin/bash
echo "update-rc.d $*" >> "$FAKE/calls"
"""
FAKE_BUILD_WHEELHOUSE = """#!/bin/bash
echo "build-wheelhouse.sh" >> "$FAKE/calls"
mkdir -p "$(dirname "$0")/../../requirements/wheelhouse"
touch "$(dirname "$0")/../../requirements/wheelhouse/.built-from.sha256"
"""
FAKE_BUILD_IMAGES = """#!/bin/bash
echo "build-images.sh" >> "$FAKE/calls"
sed -n 's/^[A-Z_]*_IMAGE=//p' "$(dirname "$0")/images.env" | while read -r image; do
    touch "$FAKE/images/${image//\\//_}"
done
"""


def _write(path: Path, text: str, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o755)


@dataclass
class Machine:
    """A fake machine in a folder: what is installed and running, and what the script called."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def fake(self) -> Path:
        return self.root / "fake"

    @property
    def bin(self) -> Path:
        return self.fake / "bin"

    def has(self, *names: str) -> Machine:
        """Install fakes: docker, dockerd, docker-compose (1.29), docker-compose-old, sudo, dpkg, apt."""
        for name in names:
            if name == "dpkg":
                _write(self.bin / "dpkg-query", FAKE_DPKG_QUERY, executable=True)
                _write(self.bin / "dpkg", FAKE_DPKG, executable=True)
            elif name == "apt":
                _write(self.bin / "apt-get", FAKE_APT, executable=True)
            elif name == "docker-compose-old":
                _write(self.bin / "docker-compose", FAKE_COMPOSE_V1.format(version="1.25.0"), executable=True)
            elif name == "docker-compose":
                shutil.copy(self.fake / "templates" / "docker-compose-1.29", self.bin / "docker-compose")
            else:
                shutil.copy(self.fake / "templates" / name, self.bin / name)
        return self

    def state(self, *flags: str) -> Machine:
        """Set facts: daemon (running), compose-v2, registry (answers)."""
        for flag in flags:
            (self.fake / flag).touch()
        return self

    def packages(self, *names: str) -> Machine:
        for name in names:
            (self.fake / "dpkg" / name).touch()
        return self

    def run(self, mode: str = "stack", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / "repo" / "scripts" / "bootstrap.sh"), mode],
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,  # no person at the terminal
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[str]:
        path = self.fake / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def called(self, prefix: str) -> list[str]:
        return [call for call in self.calls() if call.startswith(prefix)]

    def recorded_offline(self) -> str | None:
        path = self.root / "repo" / ".cache" / "stack.env"
        if not path.exists():
            return None
        return next(
            line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith("OFFLINE=")
        )


def new_machine(root: Path, os_release: str = DEBIAN, init: str = "tini", uid: int = 0) -> Machine:
    fake = root / "fake"
    for folder in ("bin", "dpkg", "images", "templates"):
        (fake / folder).mkdir(parents=True)
    for tool in REAL_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by the test"
        (fake / "bin" / tool).symlink_to(found)
    for name, text in {
        "docker": FAKE_DOCKER,
        "dockerd": FAKE_DOCKERD,
        "docker-compose-1.29": FAKE_COMPOSE_V1.format(version="1.29.2"),
        "sudo": FAKE_SUDO,
    }.items():
        _write(fake / "templates" / name, text, executable=True)
    _write(fake / "bin" / "id", FAKE_ID, executable=True)
    _write(fake / "bin" / "service", FAKE_SERVICE, executable=True)
    _write(fake / "bin" / "update-rc.d", FAKE_UPDATE_RC_D, executable=True)
    _write(fake / "os-release", os_release)
    _write(fake / "comm", init + "\n")
    # The parts of the repository the script reads; the stand-in build is a fake.
    repo = root / "repo"
    _write(
        repo / "scripts" / "bootstrap.sh", (REPO / "scripts" / "bootstrap.sh").read_text(), executable=True
    )
    shutil.copy(REPO / "compose.yaml", repo / "compose.yaml")
    _write(
        repo / "deploy" / "offline" / "images.env", (REPO / "deploy" / "offline" / "images.env").read_text()
    )
    _write(repo / "deploy" / "offline" / "build-images.sh", FAKE_BUILD_IMAGES, executable=True)
    _write(repo / "deploy" / "offline" / "build-wheelhouse.sh", FAKE_BUILD_WHEELHOUSE, executable=True)
    env = {
        "PATH": str(fake / "bin"),
        "FAKE": str(fake),
        "FAKE_UID": str(uid),
        "HOME": str(root),
        "BOOTSTRAP_OS_RELEASE": str(fake / "os-release"),
        "BOOTSTRAP_INIT_COMM": str(fake / "comm"),
        "DOCKERD_LOG": str(root / "dockerd.log"),
        "REGISTRY_TIMEOUT": "5",
    }
    return Machine(root, env)


@pytest.fixture
def debian(tmp_path: Path) -> Machine:
    """A new Debian machine, as root, with no init that runs services: apt, dpkg, nothing else."""
    return new_machine(tmp_path).has("apt", "dpkg")


def test_no_docker_on_debian_installs_engine_and_compose_starts_the_daemon_and_picks_images(
    debian: Machine,
) -> None:
    debian.state("registry")
    result = debian.run(YES="1")
    assert result.returncode == 0, result.stderr
    installs = debian.called("apt-get install")
    assert len(installs) == 2
    assert installs[0].endswith("docker.io") and installs[1].endswith("docker-compose")
    assert debian.called("dockerd") == ["dockerd --userland-proxy=false"]
    assert debian.recorded_offline() == "0"
    assert "images: the official ones (a registry answered" in result.stdout


def test_engine_and_compose_are_named_before_they_are_installed(debian: Machine) -> None:
    result = debian.run(YES="1")
    assert "missing for the Docker engine, these Debian packages: docker.io" in result.stdout
    assert result.stdout.index("these Debian packages: docker.io") < result.stdout.index("apt-get install")


def test_no_terminal_and_no_yes_installs_nothing_and_says_how(debian: Machine) -> None:
    result = debian.run()
    assert result.returncode == 1
    assert "rerun with YES=1" in result.stderr
    assert debian.called("apt-get") == []


def test_not_debian_names_what_to_install_and_where_to_read(tmp_path: Path) -> None:
    machine = new_machine(tmp_path, os_release=FEDORA)
    result = machine.run(YES="1")
    assert result.returncode == 1
    assert "docker.io" in result.stderr and "https://docs.docker.com/engine/install/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert machine.called("apt-get") == []


def test_not_root_without_sudo_names_the_command_to_run_as_root(tmp_path: Path) -> None:
    machine = new_machine(tmp_path, uid=1000).has("apt", "dpkg")
    result = machine.run(YES="1")
    assert result.returncode == 1
    assert "sudo apt-get install docker.io" in result.stderr
    assert machine.called("apt-get") == []


def test_not_root_with_sudo_installs_through_sudo(tmp_path: Path) -> None:
    machine = new_machine(tmp_path, uid=1000).has("apt", "dpkg", "sudo").state("registry")
    result = machine.run(YES="1")
    assert result.returncode == 0, result.stderr
    assert machine.called("sudo env DEBIAN_FRONTEND=noninteractive apt-get install")
    assert machine.called("sudo sh -c")  # dockerd started as root


def test_daemon_down_under_systemd_is_left_to_systemctl(debian: Machine) -> None:
    machine = new_machine(debian.root.parent / "systemd", init="systemd")
    machine.has("apt", "dpkg", "docker", "dockerd")
    result = machine.run(YES="1")
    assert result.returncode == 1
    assert "systemctl start docker" in result.stderr
    assert machine.called("dockerd") == []


def test_daemon_down_without_init_is_started_here(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("registry")
    result = debian.run()
    assert result.returncode == 0, result.stderr
    assert "no init starts it here: starting dockerd" in result.stdout
    assert debian.called("apt-get") == []


def test_compose_v2_alone_is_enough(debian: Machine) -> None:
    debian.has("docker", "dockerd").state("daemon", "compose-v2", "registry")
    result = debian.run()
    assert result.returncode == 0, result.stderr
    assert debian.called("apt-get") == []
    assert debian.called("docker-compose") == []


def test_compose_v1_alone_is_enough(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry")
    result = debian.run()
    assert result.returncode == 0, result.stderr
    assert debian.called("apt-get") == []


def test_compose_v1_older_than_1_29_is_replaced(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose-old").state("daemon", "registry")
    result = debian.run(YES="1")
    assert result.returncode == 0, result.stderr
    assert [call.split()[-1] for call in debian.called("apt-get install")] == ["docker-compose"]


def test_no_registry_builds_the_stand_ins_and_says_so(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon")
    result = debian.run(YES="1")
    assert result.returncode == 0, result.stderr
    assert "images: the air-gapped stand-ins built from Debian packages" in result.stdout
    assert "(no registry answered within 5 s" in result.stdout
    assert debian.called("build-images.sh") == ["build-images.sh"]
    assert debian.called("build-wheelhouse.sh") == ["build-wheelhouse.sh"]
    # debootstrap and a host Python for the wheelhouse come first.
    assert "debootstrap" in debian.called("apt-get install")[0]
    assert debian.recorded_offline() == "1"


def test_a_second_run_does_none_of_the_work_again(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon")
    assert debian.run(YES="1").returncode == 0
    before = len(debian.calls())
    result = debian.run()
    assert result.returncode == 0, result.stderr
    later = debian.calls()[before:]
    work = ("apt-get", "dockerd", "docker pull", "build-images", "build-wheelhouse")
    assert not [call for call in later if call.startswith(work)]
    assert "decided on the first run" in result.stdout


def test_offline_given_skips_the_registry_check(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry")
    result = debian.run(OFFLINE="0")
    assert result.returncode == 0, result.stderr
    assert debian.called("docker pull") == []
    assert "(OFFLINE=0 given)" in result.stdout
    assert debian.recorded_offline() is None


def test_test_mode_off_debian_lists_every_missing_package_before_anything_else(tmp_path: Path) -> None:
    machine = new_machine(tmp_path, os_release=FEDORA)
    result = machine.run("test", YES="1")
    assert result.returncode == 1
    for package in (
        "redis-server",
        "postgresql",
        "nginx-light",
        "chromium",
        "shellcheck",
        "wrk",
        "prometheus",
    ):
        assert package in result.stderr
    assert machine.called("docker") == []


def test_test_mode_installs_the_host_packages_and_keeps_their_services_stopped(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry").packages("make", "git")
    result = debian.run("test", YES="1")
    assert result.returncode == 0, result.stderr
    first = debian.called("apt-get install")[0].split()
    assert "redis-server" in first and "chromium-driver" in first
    assert "make" not in first and "git" not in first
    assert debian.called("service redis-server stop")


def test_test_mode_installs_prometheus_for_promtool_with_its_daemon_stopped_and_off_at_boot(
    debian: Machine,
) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry")
    result = debian.run("test", YES="1")
    assert result.returncode == 0, result.stderr
    assert "prometheus" in debian.called("apt-get install")[0].split()
    assert debian.called("service prometheus stop")
    assert debian.called("update-rc.d prometheus disable")


def test_test_mode_leaves_a_prometheus_installed_before_alone(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry").packages("prometheus")
    result = debian.run("test", YES="1")
    assert result.returncode == 0, result.stderr
    assert "prometheus" not in debian.called("apt-get install")[0].split()
    assert debian.called("service prometheus") == []
    assert debian.called("update-rc.d") == []


def test_test_mode_with_everything_installed_installs_nothing(debian: Machine) -> None:
    debian.has("docker", "dockerd", "docker-compose").state("daemon", "registry")
    assert debian.run("test", YES="1").returncode == 0
    before = len(debian.calls())
    assert debian.run("test").returncode == 0
    assert not [call for call in debian.calls()[before:] if call.startswith("apt-get")]


def test_unknown_mode_is_refused(debian: Machine) -> None:
    result = debian.run("everything")
    assert result.returncode == 1
    assert "usage: scripts/bootstrap.sh stack|test" in result.stderr


def test_the_fake_path_hides_the_real_docker(debian: Machine) -> None:
    # Guards every case above: a real docker or apt-get on PATH would make them meaningless.
    path = debian.env["PATH"]
    assert shutil.which("docker", path=path) is None
    assert os.path.dirname(shutil.which("apt-get", path=path) or "") == str(debian.bin)
