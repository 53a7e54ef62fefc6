"""Request ids in log lines.

The id lives in a context variable, so it follows the request across ``await`` points and into the
threads that asgiref's ``sync_to_async`` runs (which copy the context).
"""

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
