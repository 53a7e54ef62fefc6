"""Every scenario behind one locustfile, chosen by name: ``SCENARIO=http|echo|chat|capacity|soak``.

    SCENARIO=chat locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 30s

The name has to come from the environment, not from a Locust option: Locust imports the
locustfile (and so decides which users exist) before it parses its command line. Each scenario
is also a locustfile of its own under ``loadtests/locustfiles/``.
"""

import importlib
import os
import sys

from locust import User

SCENARIOS = {
    "http": "loadtests.locustfiles.http_endpoints",
    "echo": "loadtests.locustfiles.echo",
    "chat": "loadtests.locustfiles.chat",
    "capacity": "loadtests.locustfiles.capacity",
    "soak": "loadtests.locustfiles.soak",
}

_name = os.environ.get("SCENARIO", "http").strip().lower()
if _name not in SCENARIOS:
    sys.exit(f"SCENARIO={_name!r} is unknown; choose one of: {', '.join(SCENARIOS)}")

# Locust collects the User classes it finds in this module's namespace.
globals().update(
    {
        name: value
        for name, value in vars(importlib.import_module(SCENARIOS[_name])).items()
        if isinstance(value, type) and issubclass(value, User) and not value.abstract
    }
)
