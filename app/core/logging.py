"""Request ids in log lines.

The id lives in a context variable, so it follows the request across ``await`` points and into the
threads that asgiref's ``sync_to_async`` runs (which copy the context).
"""

import logging
import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# An incoming X-Request-ID (set by Nginx) is kept only if it looks like an id, so log lines cannot
# be forged or bloated through it.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_from(incoming: str) -> str:
    """The id a request is logged under: the proxy's X-Request-ID when well formed, else a new one."""
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
