"""Nginx reloaded, and the app containers recreated, under a bounded HTTP load.

A reload (``nginx -s reload``) fails no request. ``compose up --force-recreate`` of the app services
replaces every app container at once (compose stops the old ones, then starts the new ones), so
requests fail while none is up; once the new containers are healthy, none fails: Nginx's entry
point has followed their new addresses (it watches the DNS and reloads). ``--no-deps`` keeps compose
from recreating PostgreSQL and Redis as well (those restarts are tests of their own).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.clients import HttpLoad, failures, summary
from tests.faults.stack import TEST_TIMEOUT, Stack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

AFTER = 10  # seconds of load once the new containers are healthy


def test_nginx_reload_fails_no_request(stack: Stack, record) -> None:
    with HttpLoad(stack.base_url) as load:
        time.sleep(2)
        # The rendered config and pid file live under NGINX_TMP_DIR (nginx/entrypoint.sh).
        stack.exec(
            "nginx",
            "sh",
            "-c",
            'dir="${NGINX_TMP_DIR:-/tmp/nginx}"; nginx -p "$dir/" -c "$dir/conf/nginx.conf" -s reload',
        )
        time.sleep(5)
    record(http=summary(load.outcomes))
    assert load.outcomes and failures(load.outcomes) == [], summary(failures(load.outcomes))


def test_no_failure_once_recreated_containers_are_healthy(stack: Stack, record) -> None:
    old = {container for service in stack.app_services for container in stack.containers(service)}
    with HttpLoad(stack.base_url) as load:
        time.sleep(2)
        started = time.monotonic()
        recreated = stack.compose(
            "up", "-d", "--no-deps", "--force-recreate", *stack.scale_args(), *stack.app_services
        )
        assert recreated.returncode == 0, recreated.stderr
        new = [container for service in stack.app_services for container in stack.containers(service)]
        for container in new:
            stack.wait_container_healthy(container)
        healthy_at = time.monotonic()
        time.sleep(AFTER)
    outcomes = load.outcomes
    during = [outcome for outcome in outcomes if started <= outcome.started < healthy_at]
    after = [outcome for outcome in outcomes if outcome.started >= healthy_at]
    record(
        seconds_to_healthy=round(healthy_at - started, 1),
        during=summary(during),
        after=summary(after),
    )
    assert not old & set(new) and len(new) == len(old)  # every container was replaced
    assert after and failures(after) == [], summary(failures(after))
    # Both new replicas serve HTTP.
    hosts = {stack.inspect(container)["Config"]["Hostname"] for container in stack.containers("app")}
    assert {outcome.served_by for outcome in after} == hosts
