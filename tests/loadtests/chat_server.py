"""A stand-in for the app's chat on 127.0.0.1: history frame first, every message to every member.

For the load generators' own tests (loadtests/fanout, loadtests/sockets): their counts must be exact
against a server whose behaviour is known.
"""

import itertools
import json

from websockets.asyncio.server import ServerConnection


class Broadcaster:
    """The chat's frames, fanned out in one process; optionally as two "processes" that each fan
    out only to their own members, as the ceiling's raw ASGI app does under several workers."""

    def __init__(self, processes: int = 1) -> None:
        self.rooms: dict[tuple[str, str], set[ServerConnection]] = {}
        self.received = 0
        self.processes = processes
        self.tokens: dict[str, itertools.cycle] = {}  # per room: its members alternate "processes"

    async def handler(self, ws: ServerConnection) -> None:
        names = [f"p{i}" for i in range(self.processes)] if self.processes > 1 else [None]
        token = next(self.tokens.setdefault(ws.request.path, itertools.cycle(names)))
        key = (ws.request.path, token)
        await ws.send(json.dumps({"type": "chat.history", "messages": [], "process": token}))
        members = self.rooms.setdefault(key, set())
        members.add(ws)
        try:
            async for text in ws:
                self.received += 1
                frame = json.dumps({"type": "chat.message", "id": self.received,
                                    "message": json.loads(text)["message"]})  # fmt: skip
                for member in list(members):
                    await member.send(frame)
        finally:
            members.discard(ws)
