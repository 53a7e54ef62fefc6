"""Django's ASGI handler without the per-request thread hops.

``FastASGIHandler`` is Django's ``ASGIHandler`` with three differences, nothing else:

1. The request's thread-sensitive context gets a pooled ``RequestThread`` executor (asgiref's
   public ``ThreadSensitiveContext(executor=...)``) instead of a thread of its own.
2. Django's own receivers of ``request_started``/``request_finished`` run where they cost nothing
   (``fastpath.signals``), so an async request with no sync code makes no thread hop at all.
3. ``response.close()`` runs inline on the event loop when it can block on nothing: the response
   holds no resources to close and ``request_finished`` has no receiver left. Otherwise it runs
   through ``sync_to_async`` as Django does (file and streaming responses, user receivers).

``handle`` is Django 5.2's ``ASGIHandler.handle`` with only the last difference applied; a test
fails when Django's own changes (tests/unit/fastpath/test_django_guard.py), so an upgrade is
reviewed against it. ``ASGI_FAST_PATH=0`` switches all of this off (config/asgi.py).
"""

import asyncio
import contextlib
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

from core.fastpath.middleware import inline_variant_paths
from core.fastpath.signals import (
    after_request_finished,
    move_receivers,
    on_request_thread_given_back,
    on_request_thread_taken,
)
from core.fastpath.threads import RequestThread, ThreadPool

Scope = dict[str, Any]

# Idle request threads kept for reuse per process; above that, a finished request's thread ends.
IDLE_REQUEST_THREADS = 64


class FastASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        move_receivers()
        self.threads = ThreadPool(
            IDLE_REQUEST_THREADS, on_take=on_request_thread_taken, on_give_back=on_request_thread_given_back
        )

    def load_middleware(self, is_async: bool = False) -> None:
        """Django's, with the inline variants of its MiddlewareMixin classes (fastpath.middleware).

        ``settings.MIDDLEWARE`` keeps Django's names (the deploy checks look for them, and WSGI
        uses them); only this handler's chain is built from the variants.
        """
        stock = settings.MIDDLEWARE
        settings.MIDDLEWARE = inline_variant_paths(stock)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = stock

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = RequestThread(self.threads)
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            thread.release()

    async def close_response(self, response: HttpResponseBase) -> None:
        """``response.close()``: inline when nothing in it can block, else on the request thread."""
        if _holds_only_the_request(response) and not signals.request_finished.has_listeners(type(self)):
            response.close()
        else:
            await sync_to_async(response.close)()
        await after_request_finished()

    # Django 5.2's ASGIHandler.handle, with close_response() in place of sync_to_async(response.close).
    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await self.close_response(error_response)
            return

        async def process_request(request: Any, send: Any) -> HttpResponseBase:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client disconnected meanwhile
                await self.send_response(response, send)
            return response

        # listen_for_disconnect() first: it must not raise errors that would prevent cancelling
        # process_request().
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass  # client disconnects are ignored
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()  # lets the view handle the cancellation
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
            await after_request_finished()
        else:
            await self.close_response(response)

        body_file.close()


def _holds_only_the_request(response: HttpResponseBase) -> bool:
    """True when closing the response closes nothing but the request (its in-memory body).

    Django makes every response close its request; a file, a streaming iterator or anything else
    a view attached may block when closed, and is closed on the request thread as Django does.
    """
    closers = getattr(response, "_resource_closers", None)
    if closers is None:
        return False
    return all(isinstance(getattr(closer, "__self__", None), HttpRequest) for closer in closers)
