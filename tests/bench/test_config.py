"""The bench's settings: every bad value is refused before any container starts, naming itself."""

import pytest

from loadtests.bench import config
from loadtests.bench.config import ConfigError, Profile

SERVERS = ["daphne", "uvicorn", "gunicorn"]


def load(argv=(), **env):
    return config.load(list(argv), environ=env, known_servers=SERVERS)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", (Profile("default", {}),)),
        ("   ", (Profile("default", {}),)),
        ("stock:ASGI_FAST_PATH=0", (Profile("stock", {"ASGI_FAST_PATH": "0"}),)),
        (
            "stock:ASGI_FAST_PATH=0 fast:ASGI_FAST_PATH=1,WEB_CONCURRENCY=4",
            (
                Profile("stock", {"ASGI_FAST_PATH": "0"}),
                Profile("fast", {"ASGI_FAST_PATH": "1", "WEB_CONCURRENCY": "4"}),
            ),
        ),
        ("plain", (Profile("plain", {}),)),
        ("plain:", (Profile("plain", {}),)),
        ("layer:CHANNEL_LAYER_BACKEND=pubsub,", (Profile("layer", {"CHANNEL_LAYER_BACKEND": "pubsub"}),)),
        ("empty:LOG_LEVEL=", (Profile("empty", {"LOG_LEVEL": ""}),)),
        ("url:X=a=b", (Profile("url", {"X": "a=b"}),)),
    ],
)
def test_profiles(spec, expected):
    assert config.parse_profiles(spec) == expected


def test_a_profile_can_shard_the_layer_without_touching_the_apps_environment():
    one, sharded = config.parse_profiles("one sharded:REDIS_SHARDED=1,METRICS=0")
    assert (one.redis_sharded, sharded.redis_sharded) == (False, True)
    assert sharded.app_env == {"METRICS": "0"}  # the stack's variable is not an app variable


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (":A=1", "profile name ''"),
        ("-x:A=1", "profile name '-x'"),
        ("a/b:A=1", "profile name 'a/b'"),
        ("a:A=1 a:B=2", "defined twice"),
        ("a:NOEQUALS", "is not VAR=value"),
        ("a:1BAD=1", "is not VAR=value"),
        ("a:A-B=1", "is not VAR=value"),
        ("a:A=1,A=2", "A is set twice"),
        ("a:SERVER=daphne", "SERVER is chosen by the bench"),
        ("a:REDIS_SHARDED=yes", "REDIS_SHARDED must be 0 or 1, got 'yes'"),
    ],
)
def test_bad_profiles(spec, message):
    with pytest.raises(ConfigError, match=message):
        config.parse_profiles(spec)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20", 20), ("20s", 20), ("1.5", 1.5), ("2m", 120), ("1m30s", 90), ("1h", 3600), (" 3S ", 3)],
)
def test_durations(text, seconds):
    assert config.parse_seconds(text, "X") == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5", "abc", "5 minutes", "m", "1.2.3"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="X must be"):
        config.parse_seconds(text, "X")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ("daphne", "uvicorn", "gunicorn")),
        ("all", ("daphne", "uvicorn", "gunicorn")),
        ("uvicorn gunicorn", ("uvicorn", "gunicorn")),
        ("gunicorn,daphne", ("gunicorn", "daphne")),
    ],
)
def test_server_selection(spec, expected):
    assert config.select_servers(spec, SERVERS) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nginx", "unknown server nginx; valid: daphne uvicorn gunicorn"), ("uvicorn uvicorn", "named twice")],
)
def test_bad_server_selection(spec, message):
    with pytest.raises(ConfigError, match=message):
        config.select_servers(spec, SERVERS)


def test_scenarios_keep_the_bench_order():
    assert config.select_scenarios("chat http") == ("http", "chat")
    assert config.select_scenarios("") == config.DEFAULT_SCENARIOS  # the soak only when named
    assert "soak" not in config.DEFAULT_SCENARIOS
    assert config.select_scenarios("all") == config.SCENARIOS
    assert config.select_scenarios("soak") == ("soak",)


def test_unknown_scenario():
    with pytest.raises(ConfigError, match="unknown scenario websocket"):
        config.select_scenarios("http websocket")


def test_defaults_and_quick_mode():
    full = load()
    assert full.repeats == 3 and not full.quick and full.ceiling
    assert full.servers == tuple(SERVERS) and full.scenarios == config.DEFAULT_SCENARIOS
    assert full.locust_processes == -1 and full.project == "rtd-bench"
    quick = load(BENCH_QUICK="1")
    assert quick.quick and quick.repeats == 3 and quick.locust_processes == 0
    assert quick.http.duration < full.http.duration and quick.chat.users < full.chat.users


def test_environment_and_options():
    settings = load(
        ["--repeats", "5", "--servers", "uvicorn"],
        BENCH_REPEATS="2",
        BENCH_SCENARIOS="http wrk",
        BENCH_DURATION="7s",
        BENCH_SET="http.users=16 chat.rooms=1,4 wrk.duration=3",
        BENCH_CEILING="0",
        BENCH_PROFILES="a:X=1 b:X=2",
    )
    assert settings.repeats == 5  # the option wins over the environment
    assert settings.servers == ("uvicorn",)
    assert settings.scenarios == ("http", "wrk")
    assert settings.http.duration == settings.echo.duration == settings.chat.duration == 7
    assert settings.http.users == 16 and settings.chat.rooms == (1, 4) and settings.wrk.duration == 3
    assert not settings.ceiling
    assert [p.name for p in settings.profiles] == ["a", "b"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"BENCH_REPEATS": "0"}, "repeats"),
        ([], {"BENCH_REPEATS": "three"}, "BENCH_REPEATS must be a whole number"),
        ([], {"BENCH_QUICK": "maybe"}, "BENCH_QUICK must be 0 or 1"),
        ([], {"BENCH_SERVERS": "tornado"}, "unknown server tornado"),
        ([], {"BENCH_DURATION": "soon"}, "BENCH_DURATION must be a duration"),
        ([], {"BENCH_WARMUP": "-1"}, "BENCH_WARMUP must be a duration"),
        ([], {"BENCH_LOCUST_PROCESSES": "-2"}, "Locust processes"),
        ([], {"BENCH_PROJECT": "Rtd Bench"}, "project 'Rtd Bench'"),
        ([], {"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be >= 1"),
        (["--set", "http.users"], {}, "is not SECTION.FIELD=VALUE"),
        (["--set", "users=3"], {}, "is not SECTION.FIELD=VALUE"),
        (["--set", "ftp.users=3"], {}, "no section 'ftp'"),
        (["--set", "http.speed=3"], {}, "http has no 'speed'"),
        (["--set", "http.users=many"], {}, "http.users: 'many' is not a valid int"),
        (["--set", "http.users=0"], {}, "http.users must be >= 1"),
        (["--set", "http.duration=0"], {}, "http.duration must be longer than 0"),
        (["--set", "http.endpoints=ping,home"], {}, "unknown home"),
        (["--set", "http.endpoints="], {}, "http.endpoints is empty"),
        (["--set", "echo.interval=0.01"], {}, "echo.interval"),
        (["--set", "chat.interval=0"], {}, "chat.interval"),
        (["--set", "chat.settle=-1"], {}, "chat.settle"),
        (["--set", "chat.rooms=0"], {}, "room counts >= 1"),
        (["--set", "chat.rooms=1,x"], {}, "chat.rooms: '1,x' is not a valid"),
        (["--set", "chat.users=10", "--set", "chat.rooms=10"], {}, "must exceed every room count"),
        (["--set", "capacity.path=/api/ping"], {}, "capacity.path must be a WebSocket path"),
        (["--set", "capacity.spawn_rate=0"], {}, "capacity.spawn_rate must be > 0"),
        (["--set", "capacity.settle=-1"], {}, "capacity.settle must be >= 0"),
        (["--set", "wrk.threads=-1"], {}, "wrk.threads must be >= 0"),
    ],
)
def test_bad_settings(argv, env, message):
    with pytest.raises(ConfigError, match=message):
        load(argv, **env)


@pytest.mark.parametrize(
    ("processes", "mode"),
    [(0, "a single Locust process"), (3, "--processes 3: a master and 3 worker processes")],
)
def test_locust_mode(processes, mode):
    assert mode in config.locust_mode(processes)


def test_locust_mode_one_per_core():
    assert "(one per core)" in config.locust_mode(-1)
    assert config.locust_workers(-1) >= 1


def test_the_soak_runs_only_when_named_for_soak_minutes():
    assert "soak" not in load().scenarios and "soak" not in load(BENCH_QUICK="1").scenarios
    named = load(BENCH_SCENARIOS="chat soak", SOAK_MINUTES="10")
    assert named.scenarios == ("chat", "soak")
    assert named.soak.minutes == 10 and named.soak.replicas == 2
    assert load(BENCH_SCENARIOS="soak").soak.minutes == 30
    assert load(BENCH_SCENARIOS="soak", BENCH_QUICK="1").soak.minutes == 1
    with pytest.raises(ConfigError, match=r"soak\.minutes"):
        load(SOAK_MINUTES="0")
    with pytest.raises(ConfigError, match=r"soak\.minutes"):
        load(SOAK_MINUTES="half an hour")
