"""SIGTERM with WebSockets open: `compose stop` of the app services, as a deploy or a scale-down does.

Every container exits 0 (not 137: no SIGKILL) within the stop grace period. What the clients
see and whether ``disconnect()`` runs depends on the server: each variant's exact behaviour is a
line of tests/faults/expected.py. Room memberships a server leaves behind age out on their own.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.clients import close_code, group_key, join, unique_room
from tests.faults.expected import ON_SIGTERM
from tests.faults.stack import GROUP_EXPIRY, TEST_TIMEOUT, Stack, stop_grace_period, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

SOCKETS = 12  # spread by Nginx over both replicas and their processes


async def stop_with_sockets_open(stack: Stack, room: str) -> dict[str, object]:
    sockets = [
        (await join(stack.ws_url, stack.base_url, room, name=f"member{index}"))[0] for index in range(SOCKETS)
    ]
    members_before = stack.room_members(group_key(room))
    started = time.monotonic()

    async def closed(ws) -> tuple[int | None, float]:
        try:
            while True:
                await ws.recv()
        except Exception as exc:  # ConnectionClosed: the code; anything else: no close frame
            return (close_code(exc) if hasattr(exc, "rcvd") else None), time.monotonic() - started

    waiting = [asyncio.ensure_future(closed(ws)) for ws in sockets]
    stop = await asyncio.to_thread(stack.compose, "stop", *stack.app_services)
    elapsed = time.monotonic() - started
    closes = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    return {
        "stop": stop,
        "elapsed": elapsed,
        "members_before": members_before,
        "codes": [code for code, _ in closes],
        "closed_after": max(when for _, when in closes),
    }


def test_stop_exits_zero_and_closes_websockets(stack: Stack, record) -> None:
    room = unique_room("sigterm")
    containers = [c for service in stack.app_services for c in stack.containers(service)]
    outcome = asyncio.run(stop_with_sockets_open(stack, room))
    members_after = stack.room_members(group_key(room))
    exit_codes = [stack.inspect(container)["State"]["ExitCode"] for container in containers]
    expected = ON_SIGTERM[stack.server]
    record(
        stop_seconds=round(outcome["elapsed"], 1),
        exit_codes=exit_codes,
        close_codes=sorted({str(code) for code in outcome["codes"]}),
        sockets=SOCKETS,
        members_before=outcome["members_before"],
        members_left=members_after,
    )
    try:
        assert outcome["stop"].returncode == 0, outcome["stop"].stderr
        assert exit_codes == [0] * len(containers)  # 137 would mean SIGKILL after the grace period
        assert outcome["elapsed"] < stop_grace_period()
        # One membership per process holding sockets of the room, not one per socket.
        assert 0 < outcome["members_before"] < SOCKETS
        assert set(outcome["codes"]) <= expected.close_codes, outcome["codes"]
        if expected.members_left == "none":
            assert members_after == 0
        elif expected.members_left == "all":
            assert members_after == outcome["members_before"]
        # Whatever is left ages out: only live members renew their membership.
        wait_until(
            lambda: stack.room_members(group_key(room)) == 0, GROUP_EXPIRY + 15, "stale memberships age out"
        )
    finally:
        start = stack.compose("start", *stack.app_services)
        assert start.returncode == 0, start.stderr
        stack.wait_serving()
