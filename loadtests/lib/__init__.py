"""Shared code for the locustfiles.

The modules ``urls``, ``probe``, ``backoff``, ``settings``, ``names`` and ``memory`` are pure: they do
not import Locust (which monkey-patches the interpreter with gevent on import), so unit tests and
the memory CLI can use them in a normal process. ``options`` and ``wsuser`` are the Locust glue.
"""
