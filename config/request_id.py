"""Request ids: one per HTTP request (taken from a well-formed `X-Request-ID`, else new), held in
a context variable, stamped on every log record by `RequestIdFilter`, returned in the response
header, and carried into the Celery tasks a request queues (`config.task_signals`), so a download
or an unlock can be followed across web and worker logs.

No Django import here: gunicorn's master process loads the filter for its own log handlers.
"""

import logging
import os
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
TASK_HEADER = "request_id"

# What a proxy or client may hand us: ASCII letters, digits and a few separators, at most 128
# characters. Anything else (CR/LF, quotes, spaces, non-ASCII, a 10 KB blob) would let a client
# forge or flood log lines and headers, so it is replaced, not cleaned. Explicit ranges rather
# than \w, which would accept any Unicode letter.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def new() -> str:
    """32 hex digits, like nginx's $request_id (a third of uuid4's cost, on every request)."""
    return os.urandom(16).hex()


def accept_or_new(raw: str | None) -> str:
    """`raw` when it is a well-formed id, else a new one."""
    if raw is not None and _WELL_FORMED.fullmatch(raw):
        return raw
    return new()


def get() -> str | None:
    return _current.get()


def set_current(request_id: str | None) -> None:
    _current.set(request_id)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record while one is set. Absent otherwise, so that a plain
    format's default ("-") or the JSON formatter's null shows instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return True
