"""deploy/swarm/cluster.sh refuses bad settings and commands with a clear message, before it touches
anything (no root, namespace or engine needed; tests/cluster runs the cluster itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stackctl import run
from tests.deploy.helpers import DEPLOY

SCRIPT = DEPLOY / "swarm" / "cluster.sh"
USAGE = "usage: cluster.sh up|load-images|deploy"


def cluster_script(*args: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "CLUSTER_DIR": str(tmp_path / "c")}
    return run(["bash", str(SCRIPT), *args], timeout=30, env={**env, **settings})


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (["status"], {"CLUSTER": "Rtd"}, "CLUSTER 'Rtd': 1 to 8 lower-case letters and digits"),
        (["status"], {"CLUSTER": "averylongname"}, "CLUSTER 'averylongname': 1 to 8"),
        (["status"], {"CLUSTER_NET": "192.168"}, "CLUSTER_NET '192.168': the first two octets"),
        (["status"], {"CLUSTER_NET": "10.300"}, "CLUSTER_NET '10.300'"),
        (["status"], {"CLUSTER_NODES": "2"}, "CLUSTER_NODES must be 3 to 9, got '2'"),
        (["status"], {"CLUSTER_DIR": "var/lib/x"}, "CLUSTER_DIR must be an absolute path"),
        (["kill-node", "1"], {}, "node1 is the only manager: killing it ends the swarm"),
        (["kill-node", "4"], {}, "no node '4': nodes are 1 to 3"),
        (["restart-node", "two"], {}, "no node 'two'"),
        (["docker", "0", "ps"], {}, "no node '0'"),
        (["url", "2"], {}, "usage: cluster.sh url N PORT"),
        (["rebuild"], {}, USAGE),
        ([], {}, USAGE),
    ],
)
def test_refuses_bad_settings_and_commands(
    args: list[str], settings: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = cluster_script(*args, tmp_path=tmp_path, **settings)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "c").exists(), "nothing is made before the settings are checked"


def test_url_names_a_node_on_the_cluster_network(tmp_path: Path) -> None:
    result = cluster_script("url", "1", "8000", tmp_path=tmp_path, CLUSTER_NET="10.77")
    assert result.stdout.strip() == "http://10.77.0.11:8000"
