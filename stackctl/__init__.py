"""The project's compose stack, driven the way a user drives it (``make up``, ``make clean``).

The test suites that need a running stack (tests/e2e, tests/security, tests/faults, the Swarm test
in tests/deploy) and the bench (loadtests/bench) all start, read and stop it through this package,
and add only their own checks on top:

- ``registry`` reads deploy/servers.txt (the variants, and which one serves each WebSockets);
- ``host`` answers what the machine offers: a free port, a Docker engine;
- ``stack.Stack`` is one compose project: ``make`` and compose commands with its settings, its
  containers, their logs, its URLs.
"""

from stackctl.host import docker_available, free_port, run
from stackctl.registry import ROOT, SERVERS_FILE, registry, selected_variants, variants
from stackctl.stack import Stack, StackError, inherited_environment

__all__ = [
    "ROOT",
    "SERVERS_FILE",
    "Stack",
    "StackError",
    "docker_available",
    "free_port",
    "inherited_environment",
    "registry",
    "run",
    "selected_variants",
    "variants",
]
