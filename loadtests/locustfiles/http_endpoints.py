"""Scenario ``http``: the small endpoints that isolate one code path each.

``/api/ping`` (async view), ``/api/ping-sync`` (sync view, a thread hop under ASGI), ``/api/db``
(ORM read) and the static stylesheet (Nginx in the stack) each get their own row, named by path,
so the paths compare side by side. ``--http-endpoints db`` measures one endpoint alone, which is
how the bench runs them; ``ping:3,db:1`` weights a mix.

(The file is not called ``http.py``: Locust imports a locustfile under its bare file name, and a
module named ``http`` would replace the standard library's package.)
"""

import random

from locust import FastHttpUser, task

from loadtests.lib import names, options
from loadtests.lib.settings import http_weights
from loadtests.lib.urls import DEFAULT_BASE_URL

options.register()
options.validate_at_init(lambda environment: http_weights(environment.parsed_options))


class HttpEndpointsUser(FastHttpUser):
    host = DEFAULT_BASE_URL
    # No think time: each user is a closed loop, so throughput and latency are the server's.

    def on_start(self) -> None:
        weights = http_weights(self.environment.parsed_options)
        self.endpoints = list(weights)
        self.weights = list(weights.values())

    @task
    def endpoint(self) -> None:
        # One task choosing by weight, rather than a task per endpoint, because the weights are
        # options (CLI, environment, web UI form) and Locust fixes task weights at import time.
        key = random.choices(self.endpoints, weights=self.weights)[0]  # noqa: S311 - not cryptographic
        path = names.HTTP_ENDPOINTS[key]
        # Redirects are not followed: a 301 to https (the app's TLS switch left on) must show up as
        # a failure, not as a fast "success" that never reached the view.
        with self.client.get(path, name=path, allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
