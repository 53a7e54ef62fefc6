"""One replica killed (SIGKILL) under load: Nginx stops sending to it and the other keeps serving.

Only requests in flight on the killed replica at that moment may fail (Nginx retries an idempotent
request whose connection broke before any answer, so usually none does). Its WebSocket clients
lose their connection without a close frame and reconnect to the other replica; the memberships
the dead processes held age out of Redis within CHANNEL_LAYER_GROUP_EXPIRY. The dead replica's
address leaves the DNS, so Nginx reloads, and its old workers close the WebSockets they still carry
(the other replica's too) NGINX_SHUTDOWN_TIMEOUT later, without a close frame: they reconnect too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.faults.clients import (
    ClientsInBackground,
    HttpLoad,
    Outcome,
    ReconnectRecord,
    close_counts,
    failures,
    group_key,
    join,
    next_frame,
    summary,
    unique_room,
)
from tests.faults.stack import GROUP_EXPIRY, TEST_TIMEOUT, Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

CLIENTS = 6
OBSERVE = 10  # seconds of load after the kill
BROADCAST = "who is still here?"


@dataclass
class ReplicaKill:
    victims: list[str]  # container ids
    victim_hosts: set[str]  # their hostnames, as /api/whoami reports them
    killed_at: tuple[float, float]  # monotonic: before and after `docker kill`
    http: list[Outcome]
    clients: list[ReconnectRecord]
    room: str
    # The room's memberships (channel -> last renewal, epoch seconds), one per process holding its
    # sockets: past the expiry, before a broadcast drops the expired ones, and after it.
    members_past_expiry: dict[str, float]
    members_after_broadcast: dict[str, float]
    broadcast: str  # that broadcast's text


@pytest.fixture(scope="module")
def replica_kill(stack: Stack) -> Iterator[ReplicaKill]:
    stack.wait_serving()
    room = unique_room("kill")
    victims = [stack.containers(service)[0] for service in stack.app_services]
    hosts = {stack.inspect(victim)["Config"]["Hostname"] for victim in victims}
    try:
        with (
            HttpLoad(stack.base_url) as load,
            ClientsInBackground(stack.ws_url, stack.base_url, room, CLIENTS) as clients,
        ):
            wait_until(clients.all_connected, 30, "every chat client connected")
            time.sleep(2)
            before = time.monotonic()
            stack.docker("kill", "--signal", "KILL", *victims)
            killed_at = (before, time.monotonic())
            time.sleep(OBSERVE)
            wait_until(clients.all_connected, 60, "every chat client reconnected")
            outcomes = load.stop()
            time.sleep(GROUP_EXPIRY + 2)  # past the expiry: only renewed memberships are current
            members_past_expiry = stack.room_memberships(group_key(room))
            members_after_broadcast = asyncio.run(_broadcast(stack, room, BROADCAST))
            time.sleep(1)  # the broadcast reaches the background clients
        yield ReplicaKill(
            victims,
            hosts,
            killed_at,
            outcomes,
            clients.records,
            room,
            members_past_expiry,
            members_after_broadcast,
            BROADCAST,
        )
    finally:
        for victim in victims:  # the restart policy may have started it again already
            if stack.health(victim) == "stopped":
                stack.docker("start", victim)
        stack.wait_serving()


async def _broadcast(stack: Stack, room: str, text: str) -> dict[str, float]:
    """Send ``text`` to the room from a new member; the room's memberships once it is acknowledged."""
    ws, _ = await join(stack.ws_url, stack.base_url, room, name="sender")
    async with ws:
        await ws.send(json.dumps({"message": text}))
        ack = await next_frame(ws)
        assert ack["type"] == "chat.message" and ack["message"] == text, ack
        return stack.room_memberships(group_key(room))


def in_flight(outcome: Outcome, moment: tuple[float, float]) -> bool:
    return outcome.started <= moment[1] and outcome.ended >= moment[0]


def test_only_requests_in_flight_may_fail(replica_kill: ReplicaKill, record) -> None:
    outcomes = replica_kill.http
    caught = [outcome for outcome in outcomes if in_flight(outcome, replica_kill.killed_at)]
    record(http=summary(outcomes), in_flight_at_kill=len(caught), failed=len(failures(outcomes)))
    assert all(in_flight(outcome, replica_kill.killed_at) for outcome in failures(outcomes)), summary(
        failures(outcomes)
    )


def test_nginx_stops_sending_to_the_dead_replica(replica_kill: ReplicaKill) -> None:
    after = [outcome for outcome in replica_kill.http if outcome.started > replica_kill.killed_at[1]]
    assert after, "no request after the kill"
    assert all(outcome.ok for outcome in after)
    served_by = {outcome.served_by for outcome in after}
    assert served_by and not served_by & replica_kill.victim_hosts


def test_websocket_clients_of_the_dead_replica_reconnect(replica_kill: ReplicaKill, record) -> None:
    records = replica_kill.clients
    record(closes=close_counts(records), per_client=[client.closes for client in records])
    dropped = [client for client in records if client.closes]
    assert dropped, "no client was on the killed replica"
    # SIGKILL sends nothing: Nginx closes the client's connection without a close frame.
    assert {code for client in dropped for code in client.closes} == {None}
    assert all(client.connected for client in records)


def test_memberships_of_the_dead_replica_age_out(replica_kill: ReplicaKill, record) -> None:
    past, after = replica_kill.members_past_expiry, replica_kill.members_after_broadcast
    # Live processes renew their membership every third of the expiry; the dead ones cannot.
    newest = max(past.values())
    stale = {channel for channel, renewed in past.items() if renewed < newest - GROUP_EXPIRY}
    record(members_past_expiry=len(past), stale=len(stale), members_after_broadcast=len(after))
    # The dead processes' memberships are still there until a broadcast...
    assert stale, past
    assert len(past) > len(stale)  # and the live processes' ones beside them
    # ...which drops them, and reaches the live clients through the renewed ones.
    assert after and not stale & set(after), (past, after)
    assert all(replica_kill.broadcast in client.messages for client in replica_kill.clients)
