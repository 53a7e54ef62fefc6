"""The three-node swarm of deploy/swarm/cluster.sh, driven like a user would: ``make cluster-up``,
``make cluster-deploy``, ``make cluster-down``, and the script itself for a node's death and reboot.

Every client reaches the stack at the edge node's address on the cluster's private network
(CLUSTER_NET.0.11), through the veth the script gives this machine: an address the test created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackctl import ROOT, inherited_environment, run
from tests.faults.stack import STACK_ENV

SCRIPT = ROOT / "deploy" / "swarm" / "cluster.sh"
NAME = "rtdtest"  # never the user's own cluster (rtdc by default)
NET = "10.213"
NODES = 3
EDGE, DB_NODE, WORKER = 1, 2, 3  # cluster.sh's roles: the worker runs app tasks only
STACK = "rtd-cluster"
PORT = 8000  # Nginx's port on the edge node (inside its own namespace: always free)
SERVER = os.environ.get("CLUSTER_SERVER", "uvicorn")

# The stack differs from the defaults here only. Every client comes from one address (the per-address
# limits are raised, as in the fault tests). The servers ping every 2 s and Nginx closes a socket
# whose server sent nothing for 6 s: a dead node answers nothing, not even a reset, so this timeout
# is what ends its sockets (the defaults, 20 s and 60 s, end them within a minute).
STACK_SETTINGS = {
    **STACK_ENV,
    "WS_PING_INTERVAL": "2",
    "WS_READ_TIMEOUT": "6",
    "SWARM_UPDATE_MONITOR": "5s",
    "SWARM_WAIT_TIMEOUT": "300",
}
TOOLS = ("ip", "nsenter", "unshare", "dockerd", "containerd", "docker")


def unavailable() -> str:
    """Why this machine cannot run the cluster ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts, cgroups)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (packages iproute2, util-linux, docker.io)"
    probe = f"{NAME}-probe"
    if run(["ip", "netns", "add", probe]).returncode != 0:
        return "this kernel or container refuses network namespaces (`ip netns add` failed)"
    run(["ip", "netns", "delete", probe])
    return ""


def require_cluster_host() -> None:
    """Skip on a machine that cannot run the cluster; fail there when ``E2E_REQUIRED=1`` (make test)."""
    reason = unavailable()
    if not reason:
        return
    if os.environ.get("E2E_REQUIRED") == "1":
        pytest.fail(f"E2E_REQUIRED=1 but the cluster cannot run here: {reason}")
    pytest.skip(f"the multi-node swarm {reason}")


@dataclass(frozen=True)
class Task:
    node: str  # the node's host name
    container: str  # full container id
    address: str  # on the stack's backend network, where Nginx sends to it

    @property
    def hostname(self) -> str:
        """What /api/whoami answers from it."""
        return self.container[:12]


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(f"/var/lib/{NAME}")
        self.env = {
            **inherited_environment(),
            **STACK_SETTINGS,
            "CLUSTER": NAME,
            "CLUSTER_NET": NET,
            "CLUSTER_NODES": str(NODES),
            "CLUSTER_DIR": str(self.dir),
            "STACK": STACK,
            "SERVER": SERVER,
        }
        self.base_url = f"http://{self.address(EDGE)}:{PORT}"
        self.ws_url = self.base_url.replace("http", "ws", 1)

    @staticmethod
    def address(node: int) -> str:
        return f"{NET}.0.{10 + node}"

    @staticmethod
    def hostname(node: int) -> str:
        return f"{NAME}-node{node}"

    # --- Commands ------------------------------------------------------------------------------------

    def make(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run(["make", *args, f"SERVER={SERVER}", f"HTTP_PORT={PORT}"], timeout, cwd=ROOT, env=self.env)

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([str(SCRIPT), *args], timeout, merged=True, cwd=ROOT, env=self.env)

    def check(self, *args: str, timeout: float = 300) -> str:
        result = self.script(*args, timeout=timeout)
        assert result.returncode == 0, f"cluster.sh {' '.join(args)} failed:\n{result.stdout[-4000:]}"
        return result.stdout

    def docker(self, node: int, *args: str, timeout: float = 120) -> str:
        return self.check("docker", str(node), *args, timeout=timeout)

    # --- The swarm's view ------------------------------------------------------------------------------

    def node_state(self, node: int) -> str:
        result = self.script("docker", str(EDGE), "node", "inspect", self.hostname(node), "--format",
                             "{{.Status.State}}")  # fmt: skip
        return result.stdout.strip() if result.returncode == 0 else ""

    def tasks_reported_running(self, node: int) -> list[str]:
        """The tasks the manager still believes run on ``node``, whatever their desired state."""
        states = self.docker(EDGE, "node", "ps", self.hostname(node), "--format", "{{.CurrentState}}")
        return [line for line in states.splitlines() if line.startswith("Running")]

    def tasks(self, service: str) -> list[Task]:
        """The running tasks of ``<STACK>_<service>`` (those meant to run and running now)."""
        ids = self.docker(EDGE, "service", "ps", "-q", "--filter", "desired-state=running",
                          f"{STACK}_{service}").split()  # fmt: skip
        if not ids:
            return []
        nodes = {
            line.split()[0]: line.split()[1]
            for line in self.docker(EDGE, "node", "ls", "--format", "{{.ID}} {{.Hostname}}").splitlines()
        }
        found = []
        for raw in json.loads(self.docker(EDGE, "inspect", "--type", "task", *ids)):
            if raw["Status"]["State"] != "running":
                continue
            addresses = [
                address.split("/")[0]
                for attachment in raw.get("NetworksAttachments", [])
                if attachment["Network"]["Spec"]["Name"] == f"{STACK}_backend"
                for address in attachment["Addresses"]
            ]
            container = raw["Status"]["ContainerStatus"]["ContainerID"]
            found.append(Task(nodes[raw["NodeID"]], container, addresses[0]))
        return found

    def update_state(self, service: str) -> str:
        return self.docker(
            EDGE, "service", "inspect", f"{STACK}_{service}", "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
        ).strip()  # fmt: skip

    def wait_update(self, service: str, timeout: float = 300) -> str:
        final = {"completed", "paused", "rollback_completed", "rollback_paused"}
        deadline = time.monotonic() + timeout
        state = self.update_state(service)
        while state not in final and time.monotonic() < deadline:
            time.sleep(1)
            state = self.update_state(service)
        return state

    # --- Nginx on the edge node ------------------------------------------------------------------------

    def containers(self, node: int, service: str) -> list[str]:
        """The containers of ``<STACK>_<service>`` running on ``node``."""
        label = f"label=com.docker.swarm.service.name={STACK}_{service}"
        return self.docker(node, "ps", "-q", "--filter", label).split()

    def nginx_container(self) -> str:
        ids = self.containers(EDGE, "nginx")
        assert len(ids) == 1, f"expected one Nginx on the edge node, got {ids}"
        return ids[0]

    def nginx_upstreams(self) -> str:
        """Nginx's rendered upstreams: one `server` line per address it sends to."""
        return self.docker(EDGE, "exec", self.nginx_container(), "cat", "/tmp/nginx/conf/upstreams.conf")

    def nginx_log(self) -> dict[str, str]:
        """Nginx's access log: request id -> the upstream that served it (the last one tried)."""
        upstreams = {}
        for line in self.docker(EDGE, "logs", self.nginx_container(), timeout=60).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # not an access log line, or two workers' writes interleaved
                continue
            if isinstance(entry, dict) and "request_id" in entry:
                upstreams[entry["request_id"]] = entry["upstream_addr"].split(",")[-1].strip()
        return upstreams

    # --- PostgreSQL on the data node -------------------------------------------------------------------

    def sql(self, query: str) -> list[list[str]]:
        out = self.docker(
            DB_NODE, "exec", self.containers(DB_NODE, "postgres")[0], "sh", "-c",
            f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -AtF "|" -c "{query}"',
        )  # fmt: skip
        return [line.split("|") for line in out.splitlines() if line]

    # --- What must be gone after `down` ----------------------------------------------------------------

    def leftovers(self) -> list[str]:
        found = [ns for ns in run(["ip", "netns", "list"]).stdout.split() if ns.startswith(f"{NAME}-")]
        found += [str(path) for path in Path("/sys/fs/cgroup").glob(f"*/{NAME}")]
        found += [str(path) for path in Path("/sys/fs/cgroup").glob(NAME)]
        if self.dir.exists():
            found.append(str(self.dir))
        if run(["ip", "link", "show", f"{NAME}-host"]).returncode == 0:
            found.append(f"interface {NAME}-host")
        return found
