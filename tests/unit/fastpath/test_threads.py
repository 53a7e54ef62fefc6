"""The request-thread pool: lazy, reused last-in first-out, housekeeping in order on the thread."""

import logging
import threading

import pytest
from core.fastpath.threads import RequestThread, ThreadPool


class Recorder:
    """Records, per thread, what ran on it and in which order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def mark(self, what: str) -> None:
        with self.lock:
            self.events.append((what, threading.get_ident()))

    def pool(self, max_idle: int = 4) -> ThreadPool:
        return ThreadPool(
            max_idle, on_take=lambda: self.mark("take"), on_give_back=lambda: self.mark("give back")
        )


def test_nothing_is_taken_until_the_request_runs_sync_code():
    recorder = Recorder()
    pool = recorder.pool()
    thread = RequestThread(pool)
    thread.release()
    assert pool.created == 0
    assert not thread.used
    assert recorder.events == []


def test_housekeeping_surrounds_the_work_on_the_same_thread():
    recorder = Recorder()
    pool = recorder.pool()
    thread = RequestThread(pool)
    thread.submit(recorder.mark, "work one").result(timeout=5)
    thread.submit(recorder.mark, "work two").result(timeout=5)
    thread.release()
    pool.take().submit(lambda: None).result(timeout=5)  # waits for the give-back to have run
    names = [what for what, _ in recorder.events]
    assert names[:4] == ["take", "work one", "work two", "give back"]
    assert len({ident for _, ident in recorder.events}) == 1


def test_threads_are_reused_last_in_first_out():
    pool = Recorder().pool()
    first, second = RequestThread(pool), RequestThread(pool)
    ident_first = first.submit(threading.get_ident).result(timeout=5)
    ident_second = second.submit(threading.get_ident).result(timeout=5)
    assert ident_first != ident_second  # concurrent requests never share a thread
    first.release()
    second.release()
    assert pool.idle == 2
    again = RequestThread(pool)
    assert again.submit(threading.get_ident).result(timeout=5) == ident_second
    again.release()
    assert pool.created == 2


def test_idle_threads_above_the_limit_end():
    pool = Recorder().pool(max_idle=1)
    threads = [RequestThread(pool) for _ in range(3)]
    for thread in threads:
        thread.submit(lambda: None).result(timeout=5)
    for thread in threads:
        thread.release()
    assert pool.idle == 1
    assert pool.created == 3


def test_release_is_idempotent_and_shutdown_releases():
    pool = Recorder().pool()
    thread = RequestThread(pool)
    thread.submit(lambda: None).result(timeout=5)
    thread.shutdown()
    thread.release()
    assert pool.idle == 1


def test_failing_housekeeping_is_logged_and_the_thread_still_serves(caplog):
    def fail() -> None:
        raise RuntimeError("database went away")

    pool = ThreadPool(2, on_take=fail, on_give_back=fail)
    thread = RequestThread(pool)
    with caplog.at_level(logging.ERROR, logger="core.fastpath.threads"):
        assert thread.submit(lambda: "served").result(timeout=5) == "served"
        thread.release()
        pool.take().submit(lambda: None).result(timeout=5)
    messages = [record.getMessage() for record in caplog.records]
    assert "taking a request thread failed" in messages
    assert "giving back a request thread failed" in messages


@pytest.mark.parametrize("max_idle", [0, 1])
def test_a_pool_that_keeps_nothing_still_runs_the_give_back(max_idle):
    recorder = Recorder()
    pool = recorder.pool(max_idle=max_idle)
    thread = RequestThread(pool)
    thread.submit(lambda: None).result(timeout=5)
    thread.release()
    deadline = threading.Event()
    for _ in range(50):
        if ("give back" in [what for what, _ in recorder.events]) or deadline.wait(0.05):
            break
    assert "give back" in [what for what, _ in recorder.events]
