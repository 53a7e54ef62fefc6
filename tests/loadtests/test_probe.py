import json

import pytest

from loadtests.lib.probe import (
    Probe,
    ServerError,
    UnexpectedFrameError,
    close_status,
    decode_probe,
    encode_probe,
    is_heartbeat,
    latency_ms,
    parse_frame,
    server_error,
)


def test_probe_round_trips_through_the_message_text():
    probe = Probe(sender="sender-12-3-abcdef", seq=42, sent_at=1795000000.123456)
    text = encode_probe(probe)
    assert decode_probe(text) == probe
    assert len(text) < 120  # well under the app's CHAT_MESSAGE_MAX_CHARS


def test_probe_survives_the_chat_broadcast():
    probe = Probe(sender="s", seq=1, sent_at=10.5)
    broadcast = json.dumps(
        {
            "type": "chat.message",
            "id": 7,
            "room": "loadtest",
            "message": encode_probe(probe),
            "user": "lt-sender",
            "sent_at": "2026-11-23T19:47:46.756137+00:00",
        }
    )
    assert decode_probe(parse_frame(broadcast)["message"]) == probe


@pytest.mark.parametrize(
    "text",
    [
        "hello everyone",
        "{not json",
        '["lt", 1]',
        '{"sender": "s", "seq": 1, "sent_at": 1.0}',  # no mark: not ours
        '{"lt": 1, "sender": "s", "seq": "1", "sent_at": 1.0}',
        '{"lt": 1, "sender": "s", "seq": true, "sent_at": 1.0}',
        '{"lt": 1, "sender": 5, "seq": 1, "sent_at": 1.0}',
        '{"lt": 1, "sender": "s", "seq": 1, "sent_at": "yesterday"}',
        None,
        17,
    ],
)
def test_anything_else_is_not_a_probe(text):
    assert decode_probe(text) is None


def test_integer_send_times_are_accepted():
    assert decode_probe('{"lt":1,"sender":"s","seq":1,"sent_at":5}') == Probe("s", 1, 5.0)


def test_latency_is_milliseconds_and_never_negative():
    assert latency_ms(100.0, 100.0125) == pytest.approx(12.5)
    assert latency_ms(100.0, 99.0) == 0.0  # clock stepped back: clamped, not a negative sample


def test_parse_frame_accepts_objects_only():
    assert parse_frame('{"message": "x"}') == {"message": "x"}
    for bad in ("nope", "[1]", b"\x00\x01"):
        with pytest.raises(UnexpectedFrameError):
            parse_frame(bad)


def test_error_frames_become_server_errors():
    error = server_error({"type": "error", "code": "rate_limited", "detail": "slow down"})
    assert isinstance(error, ServerError)
    assert (error.code, error.detail, str(error)) == ("rate_limited", "slow down", "rate_limited: slow down")
    assert server_error({"type": "chat.message"}) is None
    assert server_error({"message": "echo"}) is None


def test_close_payloads():
    assert close_status(b"") == (None, "")
    assert close_status((1013).to_bytes(2, "big") + b"try again later") == (1013, "try again later")
    assert close_status((1008).to_bytes(2, "big")) == (1008, "")


@pytest.mark.parametrize(
    ("text", "heartbeat"),
    [
        ('{"type": "heartbeat"}', True),
        ('{"type":"heartbeat"}', True),
        ('{"message": "heartbeat"}', False),
        ('{"type": "heartbeat", "extra": 1}', False),
        ("heartbeat", False),
        ('{"message": "hi"}', False),
    ],
)
def test_only_the_apps_heartbeat_frame_is_one(text, heartbeat):
    assert is_heartbeat(text) is heartbeat
