"""Progress lines and the estimate of the time left."""

import io

import pytest

from loadtests.bench.progress import Progress, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (35, "35s"), (60, "1m00s"), (250, "4m10s"), (3725, "1h02m"), (-3, "0s")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_estimate_follows_the_real_speed():
    clock, out = Clock(), io.StringIO()
    progress = Progress(steps=3, estimate=300, clock=clock, out=out)
    assert progress.seconds_left() == 300
    progress.begin("uvicorn · http run 1/3", 100)
    clock.now = 200  # the step took twice its plan
    progress.end()
    assert progress.seconds_left() == pytest.approx(400)  # 200 s planned left, at half speed
    progress.skip(100)  # a failed stage's step takes no time
    assert progress.seconds_left() == pytest.approx(200)
    progress.begin("uvicorn · down", 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] uvicorn · http run 1/3 · 0s elapsed, about 5m00s left"
    assert lines[1] == "[3/3] uvicorn · down · 3m20s elapsed, about 3m20s left"


def test_a_stage_run_again_extends_the_plan():
    clock, out = Clock(), io.StringIO()
    progress = Progress(steps=2, estimate=100, clock=clock, out=out)
    progress.begin("a", 50)
    clock.now = 50  # on plan
    progress.end()
    progress.skip(50)
    assert progress.seconds_left() == 0
    progress.extend(2, 100)
    assert progress.seconds_left() == pytest.approx(100)
    progress.begin("a again", 50)
    assert out.getvalue().splitlines()[-1].startswith("[3/4] a again")
