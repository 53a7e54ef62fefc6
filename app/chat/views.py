from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    """The chat page; its JavaScript does the rest over the WebSocket."""
    return render(request, "chat/index.html", {"max_chars": settings.CHAT_MESSAGE_MAX_CHARS})
