"""One worker thread per request, taken from a pool only when the request runs sync code.

Django runs every ASGI request in a fresh asgiref ``ThreadSensitiveContext``: the first
``sync_to_async`` call of the request starts a new thread, and leaving the context starts another
one to join it. Here each request gets a ``RequestThread`` instead, an executor that borrows an
idle single-thread executor from a pool on its first use and gives it back at the end. The
thread-sensitive guarantee is the same (every sync call of one request runs on one thread, one at
a time); only the thread's creation and teardown are gone.

Django's per-thread database housekeeping moves with it (see ``fastpath.signals``): when a request
takes a thread, the thread first runs what Django's ``request_started`` receivers do for database
connections, and before it goes back to the pool it runs what ``request_finished`` does, so the
request's connections are returned to the pool (or closed) exactly as on Django's own path.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class ThreadPool:
    """Idle single-thread executors, reused last-in first-out (the warmest thread first)."""

    def __init__(self, max_idle: int, on_take: Callable[[], None], on_give_back: Callable[[], None]) -> None:
        self.max_idle = max_idle
        self.on_take = on_take  # runs on the thread when a request takes it
        self.on_give_back = on_give_back  # runs on the thread when the request gives it back
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self.created = 0  # threads started since the pool exists (tests, diagnostics)

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            else:
                worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
                self.created += 1
        _log_failure(worker.submit(self.on_take), "taking a request thread")
        return worker

    def give_back(self, worker: ThreadPoolExecutor) -> None:
        # Queued, not awaited: the single worker runs it before anything the next request submits.
        _log_failure(worker.submit(self.on_give_back), "giving back a request thread")
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        worker.shutdown(wait=False)  # runs what is queued, then the thread ends

    @property
    def idle(self) -> int:
        return len(self._idle)


class RequestThread(Executor):
    """The executor of one request's thread-sensitive context: borrows a pooled thread on first use."""

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._worker: ThreadPoolExecutor | None = None

    @property
    def used(self) -> bool:
        return self._worker is not None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._worker is None:
            self._worker = self._pool.take()
        return self._worker.submit(fn, *args, **kwargs)

    def release(self) -> None:
        """Give the thread back (called once the request and everything it started has ended)."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self._pool.give_back(worker)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.release()


def _log_failure(future: Future[Any], what: str) -> None:
    def report(done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:
            logger.error("%s failed", what, exc_info=error)

    future.add_done_callback(report)
