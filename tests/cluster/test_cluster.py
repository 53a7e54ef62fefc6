"""The stack on a three-node Docker Swarm on this one machine (deploy/swarm/cluster.sh).

node1 is the manager and the edge (Nginx), node2 holds PostgreSQL and Redis, node3 runs app tasks
only; the app's three tasks are spread over the three nodes. Through Nginx, in this order:

* every replica on every node answers;
* chat crosses nodes: clients whose sockets sit on different nodes (Nginx's log names each socket's
  upstream) all see each other's messages;
* node3 dies under chat load (every process of it killed, its link cut: it answers nothing). Its
  sockets reconnect to the other nodes within RECONNECT_WITHIN seconds, Nginx stops sending to it,
  and every acknowledged message is in PostgreSQL; Swarm marks it down and runs its task elsewhere
  (a message neither acknowledged nor refused is counted in the figures);
* (full form) node3 boots again, rejoins, and receives tasks again when the app scales out;
* (full form) a rolling update across the nodes under HTTP load fails no request;
* (full form) the stack deployed again with Redis with Sentinel (REDIS_HA=1: primary and replica on
  different nodes, one sentinel per node), and the primary's container killed under chat load: the
  sentinels promote the replica, no open socket is left silent, the clients chat again within
  RECOVERY_LIMIT seconds, no acknowledged message is lost, and the old primary comes back as a
  replica (tests/cluster/redis_failover.py, the compose scenario's clients and checks);
* ``make cluster-down`` leaves nothing: no process, namespace, cgroup or data root. The module's
  fixture runs it too, also when a step failed.

``make test-cluster`` runs all of it; ``make test-cluster-short`` (in ``make test``) leaves out the
steps marked ``cluster_full``. The figures are printed at the end (conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster.cluster import EDGE, NODES, SERVER, STACK, WORKER, Cluster, require_cluster_host
from tests.cluster.conftest import REPORT
from tests.cluster.redis_failover import kill_the_primary_under_chat_load, reconnections
from tests.faults.clients import (
    ClientsInBackground,
    HttpLoad,
    failures,
    join,
    next_frame,
    summary,
    unique_room,
)
from tests.faults.stack import wait_until
from tests.faults.test_no_data_loss import SendersInBackground
from tests.faults.test_redis_failover import (
    RECOVERY_LIMIT,
    heard_again_at,
    promoted_at,
    socket_outcomes,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

RECONNECT_WITHIN = 10.0  # seconds from a node's death until its sockets are open on other nodes
CHAT_CLIENTS = 9  # three sockets per node, as Nginx's round robin places them
LISTENERS = 12  # reconnecting chat clients during the node's death (the senders come on top)
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_cluster_host()
    cluster = Cluster()
    cluster.make("cluster-down")  # what an interrupted run left
    try:
        started = time.monotonic()
        up = cluster.make("cluster-up")
        assert up.returncode == 0, f"make cluster-up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        loaded = time.monotonic()
        deployed = cluster.make("cluster-deploy")
        said = f"{deployed.stdout[-3000:]}\n{deployed.stderr[-3000:]}"
        assert deployed.returncode == 0, f"make cluster-deploy failed:\n{said}"
        REPORT["setup"] = {
            "variant": SERVER,
            "cluster_up_and_images_s": round(loaded - started),
            "deploy_s": round(time.monotonic() - loaded),
        }
        yield cluster
    finally:
        down = cluster.make("cluster-down")
        assert down.returncode == 0, down.stderr
        assert cluster.leftovers() == []


def answering_hosts(cluster: Cluster, wanted: set[str], within: float = 30) -> set[str]:
    """The replicas (host names) /api/whoami answers from, until all of ``wanted`` did or ``within``
    seconds passed (a new task's DNS record reaches the edge node's Nginx by gossip)."""
    seen: set[str] = set()
    deadline = time.monotonic() + within
    with httpx.Client(base_url=cluster.base_url, timeout=TIMEOUT) as client:
        while not wanted <= seen and time.monotonic() < deadline:
            response = client.get("/api/whoami")
            assert response.status_code == 200, response.text
            seen.add(response.json()["hostname"])
            time.sleep(0.05)
    return seen


def test_every_replica_on_every_node_answers(cluster: Cluster) -> None:
    tasks = cluster.tasks("app")
    assert sorted(task.node for task in tasks) == [cluster.hostname(n) for n in range(1, NODES + 1)], tasks
    wanted = {task.hostname for task in tasks}
    assert answering_hosts(cluster, wanted) == wanted
    assert httpx.get(cluster.base_url + "/readyz", timeout=TIMEOUT).json()["status"] == "ok"


async def _chat(cluster: Cluster, room: str) -> tuple[list[str], dict[str, set[str]]]:
    """CHAT_CLIENTS sockets in one room, each sends once and must receive every message; the
    sockets' request ids, and what each one received."""
    sockets = [await join(cluster.ws_url, cluster.base_url, room, name=f"c{i}") for i in range(CHAT_CLIENTS)]
    request_ids = [ws.response.headers["X-Request-ID"] for ws, _ in sockets]
    received: dict[str, set[str]] = {}
    try:
        for index, (ws, _) in enumerate(sockets):
            await ws.send(json.dumps({"message": f"from c{index}"}))
        for index, (ws, _) in enumerate(sockets):
            seen: set[str] = set()
            while len(seen) < CHAT_CLIENTS:
                frame = await next_frame(ws)
                if frame.get("type") == "chat.message":
                    seen.add(frame["message"])
            received[request_ids[index]] = seen
    finally:
        for ws, _ in sockets:
            await ws.close()
    return request_ids, received


def test_chat_crosses_nodes(cluster: Cluster) -> None:
    request_ids, received = asyncio.run(_chat(cluster, unique_room("cluster")))
    expected = {f"from c{i}" for i in range(CHAT_CLIENTS)}
    assert all(seen == expected for seen in received.values()), received
    # Nginx logs each socket once it closed, with the address it was proxied to.
    node_of = {task.address: task.node for task in cluster.tasks("app")}
    log = wait_until(
        lambda: (entries := cluster.nginx_log()) and all(rid in entries for rid in request_ids) and entries,
        15, "Nginx logged every chat socket",
    )  # fmt: skip
    nodes = [node_of.get(log[rid].rsplit(":", 1)[0], log[rid]) for rid in request_ids]
    per_node = {node: nodes.count(node) for node in sorted(set(nodes))}
    REPORT["chat_across_nodes"] = {"sockets_per_node": per_node}
    assert set(nodes) == set(node_of.values()), f"sockets not on every node: {nodes}"


def victim_gone_from_nginx(cluster: Cluster, address: str) -> bool:
    return f" {address}:" not in cluster.nginx_upstreams()


def test_worker_node_killed_under_chat_load(cluster: Cluster) -> None:
    victim = next(task for task in cluster.tasks("app") if task.node == cluster.hostname(WORKER))
    room = unique_room("nodekill")
    http = HttpLoad(cluster.base_url, workers=2, pause=0.1, duration=300, keepalive=False)
    with (
        http,
        SendersInBackground(cluster) as senders,  # type: ignore[arg-type]  # needs ws_url, base_url
        ClientsInBackground(cluster.ws_url, cluster.base_url, room, LISTENERS, lifetime=300) as listeners,
    ):
        wait_until(listeners.all_connected, 60, "every listener connected")
        acked = senders.acked()
        wait_until(lambda: senders.acked() > acked + 20, 60, "messages acknowledged")

        killed_at = time.monotonic()
        cluster.check("kill-node", str(WORKER))
        gone_at = wait_until(lambda: victim_gone_from_nginx(cluster, victim.address) and time.monotonic(), 60,
                             "the dead node's address left Nginx's upstreams", every=0.25)  # fmt: skip
        down_at = wait_until(lambda: cluster.node_state(WORKER) == "down" and time.monotonic(), 60,
                             "Swarm marked the node down", every=0.5)  # fmt: skip
        moved_at = wait_until(
            lambda: len(tasks := cluster.tasks("app")) == NODES
            and all(t.node != victim.node for t in tasks)
            and time.monotonic(),
            120, "the dead node's task runs on another node",
        )  # fmt: skip
        acked = senders.acked()
        wait_until(lambda: senders.acked() > acked + 20, 60, "messages acknowledged again")
        wait_until(listeners.all_connected, 60, "every listener connected again")
    outcomes = http.stop()

    # Which sockets the dead node held, from Nginx's log (written when each socket closed).
    time.sleep(2)
    log = cluster.nginx_log()
    on_victim, reconnect_times, after_on_victim = 0, [], []
    for record in listeners.records:
        sessions = record.sessions
        for index, session in enumerate(sessions):
            upstream = log.get(session.request_id, "").rsplit(":", 1)[0]
            if session.opened > killed_at and upstream == victim.address:
                after_on_victim.append(session.request_id)
            if upstream != victim.address or session.opened > killed_at:
                continue
            on_victim += 1
            following = sessions[index + 1] if index + 1 < len(sessions) else None
            assert following is not None, "a socket of the dead node never reconnected"
            reconnect_times.append(round(following.opened - killed_at, 1))
    late = [o for o in outcomes if o.started > gone_at + 1]
    senders_figures = message_figures(cluster, senders)
    REPORT["worker_node_killed"] = {
        "victim_address_left_nginx_s": round(gone_at - killed_at, 1),
        "node_marked_down_s": round(down_at - killed_at, 1),
        "task_running_elsewhere_s": round(moved_at - killed_at, 1),
        "listener_sockets_on_dead_node": on_victim,
        "their_reconnect_s": sorted(reconnect_times),
        "http": summary(outcomes),
        "http_failed_after_nginx_dropped_it": len(failures(late)),
        **senders_figures,
    }
    assert on_victim > 0, "no listener's socket was on the dead node: nothing was tested"
    assert max(reconnect_times) <= RECONNECT_WITHIN, reconnect_times
    assert after_on_victim == [], "Nginx proxied new sockets to the dead node"
    assert failures(late) == [], summary(late)
    assert senders_figures["acknowledged_missing_in_db"] == 0, senders_figures
    # Messages neither acknowledged nor refused within the senders' 30 s are reported, not failed
    # on: one run in eight had one (stored in PostgreSQL or not: the figure says), not yet explained.


def message_figures(cluster: Cluster, senders: SendersInBackground) -> dict[str, Any]:
    records = senders.records
    rooms = ", ".join(f"'{room}'" for room in sorted({r.room for r in records}))
    rows = cluster.sql(f"SELECT id, body FROM chat_message WHERE room IN ({rooms})")
    stored = {int(message_id): body for message_id, body in rows}
    acked = {text: message_id for r in records for text, message_id in r.acked.items()}
    missing = {text: i for text, i in acked.items() if stored.get(i) != text}
    silent = [text for r in records for text in r.silent]
    return {
        "acknowledged": len(acked),
        "acknowledged_missing_in_db": len(missing),
        "reported_failed": sum(len(r.failed) for r in records),
        "silently_dropped": len(silent),
        "silently_dropped_but_stored": len(set(silent) & set(stored.values())),
    }


@pytest.mark.cluster_full
def test_killed_node_rejoins_and_receives_tasks(cluster: Cluster) -> None:
    started = time.monotonic()
    cluster.check("restart-node", str(WORKER))  # also reboots it if the step before failed early
    rejoined = time.monotonic() - started
    assert cluster.node_state(WORKER) == "ready"
    # Its agent reports that the tasks it ran before it died have ended.
    wait_until(lambda: not cluster.tasks_reported_running(WORKER), 60, "the node's old tasks reported ended")
    reported = time.monotonic() - started
    # Swarm moves no running task back by itself. New tasks are spread over the zones, but the
    # scheduler may still count the dead task in the rejoined node's zone for a while: with two
    # tasks per zone asked for, the rejoined node gets at least one whatever it still counts.
    cluster.docker(EDGE, "service", "scale", "--detach", f"{STACK}_app={2 * NODES}")
    tasks = wait_until(
        lambda: len(found := cluster.tasks("app")) == 2 * NODES and found, 300, "twice the tasks"
    )
    on_worker = {t.hostname for t in tasks if t.node == cluster.hostname(WORKER)}
    REPORT["node_rejoined"] = {
        "ready_s": round(rejoined, 1),
        "old_tasks_reported_ended_s": round(reported, 1),
        "tasks_per_node": dict(sorted(Counter(t.node for t in tasks).items())),
    }
    assert on_worker, f"no task on the rejoined node: {tasks}"
    assert on_worker <= answering_hosts(cluster, on_worker)
    cluster.docker(EDGE, "service", "scale", "--detach", f"{STACK}_app={NODES}")
    wait_until(lambda: len(cluster.tasks("app")) == NODES, 120, "back to one task per node")


@pytest.mark.cluster_full
def test_rolling_update_across_nodes_loses_no_request(cluster: Cluster) -> None:
    before = cluster.tasks("app")
    with HttpLoad(cluster.base_url, workers=3, pause=0.05, duration=420, keepalive=False) as load:
        time.sleep(2)
        cluster.docker(EDGE, "service", "update", "--detach", "--force", f"{STACK}_app")
        state = cluster.wait_update("app")
        time.sleep(5)  # the last old task's removal, under load
    outcomes = load.stop()
    after = cluster.tasks("app")
    REPORT["rolling_update"] = summary(outcomes)
    assert state == "completed", cluster.docker(EDGE, "service", "ps", f"{STACK}_app")
    assert not {t.container for t in before} & {t.container for t in after}, "every task was replaced"
    assert len({task.node for task in after}) > 1, f"not across nodes: {after}"
    assert failures(outcomes) == [], summary(outcomes)
    hosts = {outcome.served_by for outcome in outcomes}
    assert {t.hostname for t in before} & hosts and {t.hostname for t in after} <= hosts


@pytest.mark.cluster_full
def test_redis_primary_killed_under_chat_load_with_sentinels_on_three_nodes(cluster: Cluster) -> None:
    """The stack deployed again with REDIS_HA=1, then the compose failover scenario across nodes."""
    started = time.monotonic()
    deployed = cluster.make("cluster-deploy", "REDIS_HA=1")
    assert deployed.returncode == 0, f"cluster-deploy REDIS_HA=1 failed:\n{deployed.stderr[-3000:]}"
    deploy_s = time.monotonic() - started
    failover, placement = kill_the_primary_under_chat_load(cluster)

    sockets = Counter(outcome for _, outcome in socket_outcomes(failover))
    acked = {text: i for client in failover.clients for text, i in client.acked.items()}
    missing = [text for text, i in acked.items() if failover.stored.get(i) != text]
    silent = [text for client in failover.clients for text in client.silent]
    ready = [status for when, status, _ in failover.readyz if when > failover.kill_started]
    recovered = heard_again_at(failover)
    back = failover.old_primary_back
    REPORT["redis_primary_killed"] = {
        "redeploy_with_sentinels_s": round(deploy_s),
        "placement": placement,
        "promoted_after_s": round(promoted_at(failover) or -1, 1),
        "chat_again_after_s": round(recovered, 1),
        "sockets_open_at_the_kill": dict(sockets),
        **reconnections(failover),
        "acknowledged": len(acked),
        "acknowledged_missing_in_db": len(missing),
        "reported_failed": sum(len(client.failed) for client in failover.clients),
        "silently_dropped": len(silent),
        "readyz_not_200_probes": sum(status != 200 for status in ready),
        "old_primary_back_as": back.get("role"),
    }
    assert len(set(placement.values()) - {placement["redis"]}) == 2, placement
    assert placement["redis-replica"] != placement["redis"], placement
    assert len({placement[f"sentinel-{n}"] for n in (1, 2, 3)}) == 3, placement
    assert failover.new_primary not in ("", failover.old_primary), failover.new_primary
    assert "not the replica" not in failover.new_primary, failover.new_primary
    assert failover.new_primary_replication["role"] == "master"
    assert sockets and set(sockets) <= {"kept working", "told, then 1013"}, sockets
    assert recovered <= RECOVERY_LIMIT, f"chat worked again only {recovered:.1f} s after the kill"
    assert max(failover.fresh_members.values()) > 1, failover.fresh_members  # rooms cross tasks again
    assert acked and missing == [], missing[:10]
    assert silent == [], silent[:10]
    assert ready and ready[-1] == 200, ready
    assert (back["role"], back["master_host"], back["master_link_status"]) == (
        "slave", failover.new_primary, "up"
    ), back  # fmt: skip


def test_cluster_down_leaves_nothing(cluster: Cluster) -> None:
    """Last: `make cluster-down` removes every process, namespace, cgroup and data root."""
    down = cluster.make("cluster-down")
    assert down.returncode == 0, down.stderr
    assert cluster.leftovers() == []
