"""deploy/bin/run_hypercorn.py: a message over the limit costs the server at most the limit and one read.

Run in a fresh interpreter: the script replaces Hypercorn's buffer class for the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.helpers import DEPLOY

LIMIT = 65_536
CHUNK = 65_536  # one read's worth of a message's data
CHUNKS = 512  # a 32 MiB message

SCRIPT = """
import json, runpy, sys
from hypercorn.protocol import ws_stream
from wsproto.events import TextMessage

stock = ws_stream.WebsocketBuffer
bounded = runpy.run_path(sys.argv[1], run_name="run_hypercorn")["BoundedWebsocketBuffer"]
limit, chunk, chunks = map(int, sys.argv[2:])

def stored(buffer_class):
    buffer, refusals = buffer_class(limit), 0
    for index in range(chunks):
        try:
            buffer.extend(TextMessage(data="x" * chunk, message_finished=index == chunks - 1))
        except ws_stream.FrameTooLargeError:
            refusals += 1
    return {"stored": buffer.value.tell(), "refusals": refusals}

print(json.dumps({
    "stock": stored(stock),
    "bounded": stored(bounded),
    "installed": ws_stream.WebsocketBuffer is not stock,
}))
"""


def buffers() -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(DEPLOY / "bin" / "run_hypercorn.py"),
            str(LIMIT),
            str(CHUNK),
            str(CHUNKS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_message_over_the_limit_stops_being_stored():
    found = buffers()
    assert found["installed"]  # the script puts its buffer in Hypercorn's place
    # Every read over the limit is refused (each answer is the same 1009 close), none is kept.
    assert found["bounded"] == {"stored": LIMIT + CHUNK, "refusals": CHUNKS - 1}


def test_hypercorns_own_buffer_keeps_the_whole_message():
    """Why the script exists. When this fails, Hypercorn bounds its buffer itself: drop the script
    (deploy/servers/hypercorn.sh runs Hypercorn directly again) and this test."""
    assert buffers()["stock"]["stored"] == CHUNK * CHUNKS
