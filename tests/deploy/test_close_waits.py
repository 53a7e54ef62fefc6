"""How long a server waits for a client to answer its close frame, where this stack sets it: the same
in every wrapper of deploy/bin, and Uvicorn's own (the wait run_uvicorn.py uses for a 1009)."""

from __future__ import annotations

import ast
import inspect
import re

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

from tests.deploy.helpers import DEPLOY


def constant(script: str, name: str) -> float:
    """A module-level number assigned in ``deploy/bin/<script>``, read without running the script."""
    tree = ast.parse((DEPLOY / "bin" / script).read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return float(ast.literal_eval(node.value))  # type: ignore[union-attr]
    raise AssertionError(f"{script} assigns no {name}")


def test_every_server_waits_as_long_for_the_answer_to_a_close():
    # Uvicorn sets it in the protocol's constructor, which needs a running server to call.
    found = re.search(r"self\.close_timeout = ([0-9.]+)", inspect.getsource(WSProtocol.__init__))
    assert found, "Uvicorn's wsproto protocol no longer sets close_timeout in its constructor"
    uvicorn = float(found.group(1))
    assert constant("run_daphne.py", "CLOSE_HANDSHAKE_TIMEOUT") == uvicorn
    assert constant("gunicorn_asgi_conf.py", "CLOSE_TIMEOUT") == uvicorn
