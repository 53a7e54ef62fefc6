"""make profile's reading of py-spy's collapsed stacks."""

from loadtests.bench import profile

SITE = "/opt/venv/lib/python3.11/site-packages"
# py-spy's process frames carry the command line, which may hold ';'.
SERVER = f'process 12:"python -c import x; x.run()";run ({SITE}/uvicorn/main.py:10)'
HANDLER = "handle (django/core/handlers/asgi.py:160)"  # py-spy shortens the paths it knows
STACKS = [
    f"{SERVER};{HANDLER};__call__ (/opt/stack/app/core/middleware.py:40) 30",
    f"{SERVER};{HANDLER} 40",
    'process 13:"uvicorn";run (uvicorn/main.py:10);_run_once (asyncio/base_events.py:1900) 30',
    'process 14:"uvicorn";Thread.run (threading.py:982);Condition.wait (threading.py:320) 400',
    "not a stack line",
]


def test_collapsed_lines_are_read_outermost_first():
    stacks = profile.read_collapsed(STACKS)
    assert [count for _, count in stacks] == [30, 40, 30, 400]
    assert stacks[2][0][-1].startswith("_run_once (")


def test_samples_go_to_the_code_of_their_innermost_frame():
    assert (
        profile.area_of(
            "x (/opt/venv/lib/python3.11/site-packages/uvicorn/protocols/http/httptools_impl.py:1)"
        )
        == (profile.AREAS[0][0])
    )
    assert profile.area_of("y (/opt/stack/app/core/middleware.py:3)").startswith("middleware")
    assert profile.area_of("z (/opt/stack/app/core/fastpath/handler.py:3)").startswith("the app's fast path")
    assert profile.area_of("w (/somewhere/else.py:1)") == profile.OTHER


def test_the_summary_shares_add_up_and_name_the_hottest_code():
    summary = profile.summarize(profile.read_collapsed(STACKS))
    # The idle pool thread's 400 samples are counted apart, not as work.
    assert summary.startswith("100 samples of the app container's Python threads at work (400 more")
    assert "| Django's request handler | 40.0 % |" in summary
    assert "| middleware (Django's and the app's) | 30.0 % |" in summary
    assert "| the event loop (asyncio, uvloop) | 30.0 % |" in summary
    # Inclusive: the handler is on the stack of 70 of the 100 samples; the process line is no function,
    # and the server's run(), under every sample, is left out.
    assert "| handle (django/core/handlers/asgi.py) | 70.0 % |" in summary
    assert "process 1" not in summary and "x.run()" not in summary
    assert "| run (uvicorn/main.py) |" not in summary
    assert profile.summarize([]).startswith("No samples")
