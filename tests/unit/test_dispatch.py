"""PortableConsumer.dispatch (core/consumers.py): Channels' dispatch without the per-event database
clean-up hop.

The consumers reach the database only through ``database_sync_to_async`` (which closes stale
connections around each call), so skipping Channels' extra ``close_old_connections`` hop before
every event keeps the same connection hygiene. ``ASGI_FAST_PATH=0`` restores Channels' dispatch.
"""

import hashlib
import inspect
import json

import pytest
from channels import consumer as channels_consumer
from channels.consumer import AsyncConsumer
from channels.db import DatabaseSyncToAsync
from chat.consumers import ChatConsumer

from tests.unit.conftest import close_communicators, communicator

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 3

# sha256 of the Channels 4.3 code PortableConsumer.dispatch replaces (AsyncConsumer.dispatch) and
# relies on (DatabaseSyncToAsync.thread_handler).
# When this fails after an upgrade, compare the new method with PortableConsumer.dispatch, adapt it,
# then update the fingerprint.
CHANNELS_DISPATCH = "39f34e7d4fb0f6552de4ade665b943fe78137379702af6b58c79a14c49a75520"
CHANNELS_DATABASE_CALL = "00f86b58c522f98e24add023ffd40b25cfeab1cc2007cbc003b63a7677f9cfc7"


@pytest.fixture(autouse=True)
async def _clients_closed():
    yield
    await close_communicators()


@pytest.fixture
def clean_ups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every clean-up hop Channels' dispatch makes before an event."""
    calls: list[str] = []

    async def per_event() -> None:
        calls.append("dispatch")

    monkeypatch.setattr(channels_consumer, "aclose_old_connections", per_event)
    return calls


async def _chat_round(room: str) -> None:
    """Two members; one sends a message; both receive it."""
    clients = []
    for name in ("alice", "bob"):
        client = communicator(f"/ws/chat/{room}/?name={name}")
        connected, _ = await client.connect(timeout=TIMEOUT)
        assert connected
        assert (await client.receive_json_from(timeout=TIMEOUT))["type"] == "chat.history"
        clients.append(client)
    await clients[0].send_to(text_data=json.dumps({"message": "hi"}))
    for client in clients:
        assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "hi"


def _fingerprint(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def test_channels_code_is_the_one_relied_on() -> None:
    assert _fingerprint(AsyncConsumer.dispatch) == CHANNELS_DISPATCH
    # What makes the skipped hop redundant: every database call of the consumers closes stale
    # connections before and after it (Channels' tests switch that off, so it is checked here).
    assert _fingerprint(DatabaseSyncToAsync.thread_handler) == CHANNELS_DATABASE_CALL
    for method in ("_history", "_store"):
        assert isinstance(ChatConsumer.__dict__[method], DatabaseSyncToAsync), method


async def test_events_skip_the_clean_up_hop(clean_ups: list[str]) -> None:
    await _chat_round("dispatch-fast")
    assert clean_ups == []


async def test_stock_path_keeps_channels_dispatch(clean_ups: list[str], settings) -> None:
    settings.ASGI_FAST_PATH = False
    await _chat_round("dispatch-stock")
    # connect x2, the message received, the broadcast delivered x2, at the least
    assert clean_ups.count("dispatch") >= 5


async def test_an_event_without_a_handler_is_refused() -> None:
    consumer = ChatConsumer()
    with pytest.raises(ValueError, match=r"No handler for message type no\.such\.event"):
        await consumer.dispatch({"type": "no.such.event"})
