"""Views that exercise what the fast path must keep: errors, streaming and file responses, POST."""

import tempfile

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

# What each view's resources saw: the tests read it after the request.
closed: dict[str, bool] = {}


async def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("async view failed")


def boom_sync(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("sync view failed")


class Chunks:
    """A streaming body that records being closed."""

    def __init__(self) -> None:
        self.parts = iter([b"one,", b"two"])

    def __iter__(self) -> "Chunks":
        return self

    def __next__(self) -> bytes:
        return next(self.parts)

    def close(self) -> None:
        closed["stream"] = True


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(Chunks())


class TrackedFile(tempfile.SpooledTemporaryFile):
    def close(self) -> None:
        closed["file"] = True
        super().close()


def file(request: HttpRequest) -> FileResponse:
    handle = TrackedFile()
    handle.write(b"file body")
    handle.seek(0)
    return FileResponse(handle, filename="body.txt")


async def echo_post(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body)


urlpatterns = [
    path("boom", boom),
    path("boom-sync", boom_sync),
    path("stream", stream),
    path("file", file),
    path("post", echo_post),
]
