import pytest

from loadtests.lib.backoff import Backoff


def test_delays_grow_to_the_cap_with_jitter_within_half_to_full():
    low = Backoff(initial=0.5, maximum=4.0, rng=lambda: 0.0)
    high = Backoff(initial=0.5, maximum=4.0, rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [high.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_reset_starts_over():
    backoff = Backoff(initial=1.0, maximum=8.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_a_long_outage_does_not_overflow():
    backoff = Backoff(initial=0.5, maximum=15.0, rng=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 15.0


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}])
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)
