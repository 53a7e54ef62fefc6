"""The Redis primary killed under chat load on the cluster, with Sentinel (REDIS_HA=1): the compose
scenario of tests/faults/test_redis_failover.py, its clients and its checks, with the members on
different nodes (cluster.sh's placement: `redis` on the data node, `redis-replica` on another one,
one sentinel per node).

``ClusterMembers`` gives those helpers what they ask of a compose stack (``exec`` in a service's
container, the URLs), through the engine of the node each task runs on.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from tests.cluster.cluster import STACK, Cluster
from tests.faults.clients import InBackground, unique_room
from tests.faults.stack import wait_until
from tests.faults.test_redis_failover import (
    ACK_TIMEOUT,
    OBSERVE,
    ChatClient,
    Failover,
    Probe,
    fresh_memberships,
    primary_address,
    replication,
)

ROOMS = 3
CLIENTS_PER_ROOM = 4  # Nginx's round robin spreads each room's sockets over the app's tasks


class ClusterMembers:
    """What the compose scenario's helpers use of a stack, on the cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.base_url = cluster.base_url
        self.ws_url = cluster.ws_url
        self.server = "cluster"
        self._sentinels: dict[str, tuple[int, str]] = {}

    def where(self, service: str) -> tuple[int, str]:
        """The node (number) and container of the service's one running task. Sentinels stay where
        they are during the scenario; the Redis members are looked up each time (Swarm replaces a
        killed one)."""
        if service in self._sentinels:
            return self._sentinels[service]
        tasks = self.cluster.tasks(service)
        assert len(tasks) == 1, f"{STACK}_{service}: {tasks}"
        found = int(tasks[0].node.rsplit("node", 1)[1]), tasks[0].container
        if service.startswith("sentinel"):
            self._sentinels[service] = found
        return found

    def exec(self, service: str, *command: str) -> str:
        node, container = self.where(service)
        return self.cluster.docker(node, "exec", container, *command, timeout=30)

    def address(self, service: str) -> str:
        tasks = self.cluster.tasks(service)
        assert len(tasks) == 1, f"{STACK}_{service}: {tasks}"
        return tasks[0].address


def kill_the_primary_under_chat_load(cluster: Cluster) -> tuple[Failover, dict[str, str]]:
    """The scenario: its record (as the compose test's) and where the members ran."""
    members = ClusterMembers(cluster)
    old_primary, replica = members.address("redis"), members.address("redis-replica")
    placement = {
        service: cluster.hostname(members.where(service)[0])
        for service in ("redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3")
    }
    assert primary_address(members, "sentinel-1") == old_primary  # type: ignore[arg-type]
    assert replication(members, "redis-replica")["role"] == "slave"  # type: ignore[arg-type]
    rooms = [unique_room(f"clusterha{index}") for index in range(ROOMS)]
    clients = [
        ChatClient(members, room, f"{room}-c{index}")  # type: ignore[arg-type]
        for room in rooms
        for index in range(CLIENTS_PER_ROOM)
    ]
    victim_node, victim = members.where("redis")
    with InBackground(clients, join_timeout=ACK_TIMEOUT + 30):
        for client in clients:
            client.start.set()
            assert client.connected.wait(30), f"{client.record.name} did not connect"
        time.sleep(3)  # traffic before the fault
        with Probe(members) as probe:  # type: ignore[arg-type]
            time.sleep(1)
            kill_epoch = time.time()
            kill_started = time.monotonic()
            cluster.docker(victim_node, "kill", "--signal", "KILL", victim)
            killed_at = time.monotonic()
            time.sleep(OBSERVE)
        new_primary = primary_address(members, "sentinel-2")  # type: ignore[arg-type]
        fresh = {
            room: fresh_memberships(members, "redis-replica", room, kill_epoch)  # type: ignore[arg-type]
            for room in rooms
        }
    # Swarm starts a new `redis` task (its restart policy); it asks the sentinels who the primary is.
    wait_until(lambda: any(t.container != victim for t in cluster.tasks("redis")), 120, "redis started again")
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: replication(members, "redis").get("master_link_status") == "up",  # type: ignore[arg-type]
            60, "the old primary in sync",
        )  # fmt: skip
    room_list = ", ".join(f"'{room}'" for room in rooms)
    rows = cluster.sql(f"SELECT id, body FROM chat_message WHERE room IN ({room_list})")
    failover = Failover(
        variant=cluster.env["SERVER"],
        kill_started=kill_started,
        killed_at=killed_at,
        old_primary=old_primary,
        new_primary=new_primary if new_primary == replica else f"{new_primary} (not the replica {replica})",
        clients=[client.record for client in clients],
        readyz=probe.readyz,
        primary_seen=probe.primary,
        fresh_members=fresh,
        old_primary_back=replication(members, "redis"),  # type: ignore[arg-type]
        new_primary_replication=replication(members, "redis-replica"),  # type: ignore[arg-type]
        stored={int(message_id): body for message_id, body in rows},
    )
    return failover, placement


def reconnections(failover: Failover) -> dict[str, Any]:
    """Per client: seconds from the kill to its first socket opened after it, and the handshakes
    refused meanwhile (what a slow recovery is made of)."""
    opened = []
    for client in failover.clients:
        after = [s.opened - failover.kill_started for s in client.sessions if s.opened > failover.killed_at]
        opened.append(round(min(after), 1) if after else None)
    return {
        "reopened_after_s": sorted(opened, key=lambda value: (value is None, value)),
        "refused_handshakes": sum(client.refused for client in failover.clients),
    }
