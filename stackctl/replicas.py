"""A chat broadcast that must cross replicas: one client inside each replica's container, each
connected to that replica's own server, each sending once and waiting for every message.

The host name each client reports is its replica's, so distinct hosts that all saw every message
prove the broadcast crossed replicas through the channel layer (Redis). Used by the compose and
the Swarm tests alike.
"""

import json
import subprocess

# Each client joins, waits ``delay`` seconds for the others to join, sends once, and waits for all.
CLIENT = """
import asyncio, json, socket, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:8000/ws/chat/{room}/?name=" + socket.gethostname(),
                                  origin="http://localhost", open_timeout=10) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))  # the history
        await asyncio.sleep({delay})                       # the other clients join meanwhile
        await ws.send(json.dumps({{"message": "from " + socket.gethostname()}}))
        seen = set()
        while len(seen) < {expected}:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame.get("type") == "chat.message":
                seen.add(frame["message"])
        print(json.dumps({{"host": socket.gethostname(), "seen": sorted(seen)}}))
asyncio.run(main())
"""
CLIENT_TIMEOUT = 60.0


def check_chat_crosses(containers: list[str], room: str, delay: float = 3) -> None:
    """Run one client in each container at once; AssertionError unless each ran on a replica of its
    own and saw every client's message (or a client failed: its stderr)."""
    script = CLIENT.format(room=room, delay=delay, expected=len(containers))
    clients = [
        subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            ["docker", "exec", container, "python", "-c", script],  # noqa: S607 - docker from PATH
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for container in containers
    ]
    results = []
    for client in clients:
        try:
            out, err = client.communicate(timeout=CLIENT_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
        assert client.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    hosts = {result["host"] for result in results}
    assert len(hosts) == len(containers), f"not one client per replica: {results}"
    for result in results:
        assert result["seen"] == sorted(f"from {host}" for host in hosts), results
