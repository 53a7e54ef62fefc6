from chat.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill():
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.5  # one token back
    assert bucket.allow() is True
    assert bucket.allow() is False


def test_refill_is_capped_at_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=2, clock=clock)
    clock.now = 60
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
