import pytest
from config import env
from django.core.exceptions import ImproperlyConfigured


def test_value_from_environment(monkeypatch):
    monkeypatch.setenv("X_TEST", "value")
    assert env.get_str("X_TEST") == "value"


def test_value_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.delenv("X_TEST", raising=False)
    monkeypatch.setenv("X_TEST_FILE", str(secret))
    assert env.get_str("X_TEST") == "from-file"


def test_environment_wins_over_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file")
    monkeypatch.setenv("X_TEST", "direct")
    monkeypatch.setenv("X_TEST_FILE", str(secret))
    assert env.get_str("X_TEST") == "direct"


def test_unreadable_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("X_TEST", raising=False)
    monkeypatch.setenv("X_TEST_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="X_TEST_FILE"):
        env.get_str("X_TEST")


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("ON", True), ("0", False), ("no", False)]
)
def test_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("X_TEST", raw)
    assert env.get_bool("X_TEST", default=not expected) is expected


@pytest.mark.parametrize("reader", [env.get_bool, env.get_int, env.get_float])
def test_malformed_values_are_refused(monkeypatch, reader):
    monkeypatch.setenv("X_TEST", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_TEST"):
        reader("X_TEST", 1)


def test_list_drops_blanks(monkeypatch):
    monkeypatch.setenv("X_TEST", " a, ,b ,")
    assert env.get_list("X_TEST") == ["a", "b"]


def test_empty_value_means_default(monkeypatch):
    monkeypatch.setenv("X_TEST", "")
    assert env.get_str("X_TEST", "fallback") == "fallback"
    assert env.get_list("X_TEST", "a,b") == ["a", "b"]
