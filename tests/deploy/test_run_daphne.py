"""deploy/bin/run_daphne.py: on SIGTERM, every pending application instance is cancelled and waited for.

Run in a fresh interpreter: importing Daphne installs Twisted's asyncio reactor for the process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.helpers import DEPLOY

SCRIPT = """
import asyncio, json, runpy, sys
module = runpy.run_path(sys.argv[1], run_name="run_daphne")
Server = module["Server"]

async def main():
    ended = []

    async def connection(name, raises):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a connection's own cleanup (closing, leaving its room)
            ended.append(name)
            if raises:
                raise

    server = Server.__new__(Server)  # only kill_all_applications is exercised
    server.connections = {
        "idle keep-alive": {"connected": 0.0},  # its last instance was reaped: no key
        "raises": {"application_instance": asyncio.ensure_future(connection("raises", True))},
        "returns": {"application_instance": asyncio.ensure_future(connection("returns", False))},
    }
    await asyncio.sleep(0)
    done = asyncio.get_running_loop().create_future()
    server.kill_all_applications().addBoth(lambda _: done.set_result(sorted(ended)))
    print(json.dumps(await asyncio.wait_for(done, 5)))

asyncio.run(main())
"""


def outcome_of(script: str) -> object:
    """What ``script`` printed last, as JSON, run on run_daphne.py's module in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(DEPLOY / "bin" / "run_daphne.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_sigterm_cancels_every_instance_and_waits_for_all() -> None:
    # No KeyError on the idle connection, and the wait outlasts the instance that raised.
    assert outcome_of(SCRIPT) == ["raises", "returns"]


SEND_WAITS_SCRIPT = """
import asyncio, json, runpy, sys
module = runpy.run_path(sys.argv[1], run_name="run_daphne")
Server, SendFlow = module["Server"], module["SendFlow"]

class Protocol:
    def __init__(self):
        self.send_flow = SendFlow()
        self.sent = []

    def handle_reply(self, message):
        self.sent.append(message["type"])

async def main():
    server = Server.__new__(Server)  # only handle_reply is exercised
    protocol = Protocol()
    server.connections = {protocol: {}}
    protocol.send_flow.pauseProducing()  # Twisted: the write buffer is over its bufferSize
    frame = asyncio.ensure_future(server.handle_reply(protocol, {"type": "websocket.send", "text": "x"}))
    await asyncio.sleep(0.05)
    held = (frame.done(), list(protocol.sent))
    protocol.send_flow.resumeProducing()  # Twisted: the buffer is written out
    await asyncio.wait_for(frame, 5)
    protocol.send_flow.pauseProducing()
    protocol.send_flow.stopProducing()  # the connection is gone: nothing may wait on it
    await asyncio.wait_for(server.handle_reply(protocol, {"type": "websocket.send", "text": "y"}), 5)
    print(json.dumps({"held": held, "sent": protocol.sent}))

asyncio.run(main())
"""


def test_a_send_waits_while_the_write_buffer_is_full() -> None:
    outcome = outcome_of(SEND_WAITS_SCRIPT)
    assert isinstance(outcome, dict)
    assert outcome["held"] == [False, []]  # nothing written while Twisted holds the producer paused
    assert outcome["sent"] == ["websocket.send", "websocket.send"]
