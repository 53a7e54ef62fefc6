import asyncio

import pytest
from core import readiness
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_database_round_trip_really_queries():
    await readiness.check_database()


async def test_channel_layer_round_trip():
    await readiness.check_channel_layer()


async def _broken() -> None:
    raise ConnectionError("Connection refused")


async def _hangs() -> None:
    await asyncio.sleep(60)


@pytest.mark.parametrize("dependency", ["database", "channel_layer"])
async def test_readyz_names_the_failing_dependency(monkeypatch, dependency):
    monkeypatch.setitem(readiness.CHECKS, dependency, _broken)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"][dependency] == "failing"
    assert set(body["errors"]) == {dependency}
    assert "Connection refused" in body["errors"][dependency]


async def test_readyz_does_not_hang_on_a_silent_dependency(monkeypatch, settings):
    settings.READINESS_TIMEOUT = 0.2
    monkeypatch.setitem(readiness.CHECKS, "channel_layer", _hangs)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    assert "no answer within 0.2s" in response.json()["errors"]["channel_layer"]


async def test_healthz_touches_no_dependency(monkeypatch):
    for name in list(readiness.CHECKS):
        monkeypatch.setitem(readiness.CHECKS, name, _broken)
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
