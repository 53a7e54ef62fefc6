"""Locust scenarios for the stack: HTTP endpoints, WebSocket echo, chat fan-out, connection capacity.

Run them from the repository root (Locust puts the working directory on ``sys.path``, which is how
the locustfiles find ``loadtests.lib``). See ``loadtests/README.md``.
"""
