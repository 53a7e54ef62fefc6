"""Redis and PostgreSQL stopped and started again under open chat sockets; the app is not restarted.

While a dependency is down, /readyz answers 503 naming it, and chat clients are told, never left
waiting: Redis down closes every chat socket with 1013 after a ``layer_unavailable`` error frame;
PostgreSQL down answers each message with ``storage_unavailable`` (not stored: send it again) on a
socket that stays open, and a new chat socket gets that error and a 1013 close. When it is back,
/readyz answers 200 again, clients reconnect and get the room's history, and messages flow.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.faults.clients import (
    FRAME_TIMEOUT,
    connect,
    frames_until_closed,
    join,
    next_frame,
    unique_room,
)
from tests.faults.stack import HEALTHY_TIMEOUT, TEST_TIMEOUT, Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

LISTENERS = 4  # chat sockets open through the outage, besides the one that talks
OUTAGE_TIMEOUT = 60  # seconds for /readyz, sockets and clients to notice the outage
RECONNECT_ATTEMPTS = 10  # a client reconnects after 1013, with a pause between attempts


def app_processes(stack: Stack) -> dict[str, tuple[str, int]]:
    """Each app container's start time and restart count: equal before and after means no restart."""
    states = {}
    for service in stack.app_services:
        for container in stack.containers(service):
            state = stack.inspect(container)
            states[container] = (state["State"]["StartedAt"], state["RestartCount"])
    return states


async def say(ws: Any, text: str) -> dict[str, Any]:
    """Send a chat message; the first answer that concerns it: its acknowledgement or an error."""
    await ws.send(json.dumps({"message": text}))
    while True:
        frame = await next_frame(ws)
        if frame.get("type") == "error" or frame.get("message") == text:
            return frame


async def new_socket_outcome(stack: Stack, room: str) -> tuple[list[dict[str, Any]], int | None]:
    """A chat socket opened during the outage: its frames and close code."""
    ws = await connect(stack.ws_url, f"/ws/chat/{room}/", stack.base_url)
    async with ws:
        return await frames_until_closed(ws, within=OUTAGE_TIMEOUT)


async def rejoin(stack: Stack, room: str) -> tuple[Any, list[dict[str, Any]], int]:
    """Join like a client after an outage: reconnect after a 1013, a bounded number of times."""
    for attempt in range(1, RECONNECT_ATTEMPTS + 1):
        try:
            ws, history = await join(stack.ws_url, stack.base_url, room)
        except AssertionError:  # an error frame instead of the history, then 1013
            await asyncio.sleep(1)
            continue
        return ws, [message["id"] for message in history], attempt
    raise AssertionError(f"no chat connection after {RECONNECT_ATTEMPTS} attempts")


def wait_readyz(stack: Stack, status: int) -> dict[str, Any]:
    """Poll /readyz until it answers ``status``; its body."""
    answers: list[tuple[int, dict[str, Any]]] = []

    def answered() -> dict[str, Any] | None:
        answers.append(stack.readyz())
        return answers[-1][1] if answers[-1][0] == status else None

    try:
        return wait_until(answered, OUTAGE_TIMEOUT, f"/readyz {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {answers[-1] if answers else None}") from None


async def talker_before_the_outage(stack: Stack, room: str) -> tuple[Any, dict[str, Any]]:
    """A socket in ``room`` that said something while every dependency ran, and what it said."""
    talker, _ = await join(stack.ws_url, stack.base_url, room, name="talker")
    before = await say(talker, "before the outage")
    assert before["type"] == "chat.message", before
    return talker, before


def stop(stack: Stack, service: str) -> None:
    stopped = stack.compose("stop", service)
    assert stopped.returncode == 0, stopped.stderr


def start_again(stack: Stack, service: str) -> None:
    started = stack.compose("start", service)
    assert started.returncode == 0, started.stderr
    stack.wait_container_healthy(stack.container(service), HEALTHY_TIMEOUT)


def test_redis_restart(stack: Stack, record) -> None:
    processes = app_processes(stack)
    room = unique_room("redis")

    async def scenario() -> dict[str, Any]:
        talker, before = await talker_before_the_outage(stack, room)
        sockets = [talker] + [(await join(stack.ws_url, stack.base_url, room))[0] for _ in range(LISTENERS)]
        watching = [asyncio.ensure_future(frames_until_closed(ws, OUTAGE_TIMEOUT)) for ws in sockets]
        await asyncio.to_thread(stop, stack, "redis")
        closed = await asyncio.gather(*watching)
        readyz = await asyncio.to_thread(wait_readyz, stack, 503)
        newcomer = await new_socket_outcome(stack, room)
        await asyncio.to_thread(start_again, stack, "redis")
        await asyncio.to_thread(wait_readyz, stack, 200)
        ws, history, attempts = await rejoin(stack, room)
        listener, _ = await join(stack.ws_url, stack.base_url, room)
        async with ws, listener:
            after = await say(ws, "after the outage")
            heard = await next_frame(listener)
        return {
            "readyz": readyz,
            "closed": closed,
            "newcomer": newcomer,
            "before": before,
            "history": history,
            "attempts": attempts,
            "after": after,
            "heard": heard,
        }

    seen = asyncio.run(scenario())
    record(
        readyz_during=seen["readyz"],
        open_sockets=[(code, [f.get("code") for f in frames]) for frames, code in seen["closed"]],
        new_socket=[seen["newcomer"][1], [f.get("code") for f in seen["newcomer"][0]]],
        rejoin_attempts=seen["attempts"],
    )
    assert seen["readyz"]["checks"] == {"database": "ok", "channel_layer": "failing"}
    assert set(seen["readyz"]["errors"]) == {"channel_layer"}
    for frames, code in seen["closed"] + [seen["newcomer"]]:
        assert code == 1013, (code, frames)
        assert [frame["code"] for frame in frames if frame.get("type") == "error"] == ["layer_unavailable"]
    assert seen["before"]["id"] in seen["history"]  # the history again, from PostgreSQL
    assert seen["after"]["type"] == "chat.message"
    assert seen["heard"] == seen["after"]  # broadcasts flow again
    assert app_processes(stack) == processes  # recovered without restarting the app


def test_postgres_restart(stack: Stack, record) -> None:
    processes = app_processes(stack)
    room = unique_room("postgres")

    async def scenario() -> dict[str, Any]:
        talker, before = await talker_before_the_outage(stack, room)
        # Sockets that stay quiet through the outage, on every process: their processes' pooled
        # connections died with PostgreSQL unused.
        quiet = [(await join(stack.ws_url, stack.base_url, room))[0] for _ in range(LISTENERS * 2)]
        await asyncio.to_thread(stop, stack, "postgres")
        readyz = await asyncio.to_thread(wait_readyz, stack, 503)
        during = await say(talker, "during the outage")
        during_again = await say(talker, "during the outage, again")  # the socket stayed open
        newcomer = await new_socket_outcome(stack, room)
        await asyncio.to_thread(start_again, stack, "postgres")
        await asyncio.to_thread(wait_readyz, stack, 200)
        after = await asyncio.wait_for(say(talker, "after the outage"), FRAME_TIMEOUT)
        first_words = [await say(ws, f"first words {index}") for index, ws in enumerate(quiet)]
        ws, history, _ = await rejoin(stack, room)
        for socket in (talker, ws, *quiet):
            await socket.close()
        return {
            "readyz": readyz,
            "before": before,
            "during": during,
            "during_again": during_again,
            "newcomer": newcomer,
            "after": after,
            "first_words": first_words,
            "history": history,
        }

    seen = asyncio.run(scenario())
    stored = [row[0] for row in stack.sql(f"SELECT body FROM chat_message WHERE room = '{room}' ORDER BY id")]
    record(
        readyz_during=seen["readyz"],
        during=[seen["during"].get("code"), seen["during_again"].get("code")],
        new_socket=[seen["newcomer"][1], [f.get("code") for f in seen["newcomer"][0]]],
        after=seen["after"]["type"],
        first_words=[frame.get("code") or frame["type"] for frame in seen["first_words"]],
        stored=len(stored),
    )
    assert seen["readyz"]["checks"] == {"database": "failing", "channel_layer": "ok"}
    assert set(seen["readyz"]["errors"]) == {"database"}
    for frame in (seen["during"], seen["during_again"]):
        assert frame["type"] == "error" and frame["code"] == "storage_unavailable", frame
    frames, code = seen["newcomer"]
    assert code == 1013 and [frame["code"] for frame in frames] == ["storage_unavailable"], (code, frames)
    # The first message after the restart is stored, on every process: the pool checks a
    # connection before lending it and replaces those that died with the server.
    assert seen["after"]["type"] == "chat.message", seen["after"]
    assert [frame["type"] for frame in seen["first_words"]] == ["chat.message"] * len(seen["first_words"])
    assert seen["before"]["id"] in seen["history"] and seen["after"]["id"] in seen["history"]
    refused = {"during the outage", "during the outage, again"}
    assert not refused & set(stored) and len(stored) == 2 + len(seen["first_words"])
    assert app_processes(stack) == processes
