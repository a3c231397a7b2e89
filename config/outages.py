"""Database outages: PostgreSQL restarting, failing over, or out of reach.

Such an error says nothing about the request or the task that met it, so neither is treated as
a crash: web requests answer 503 with Retry-After (`config.exceptions.server_error`, Django's
handler500, which sees every exception a request raises, from a view or a middleware), and
Celery tasks are retried with backoff (`RetryOnOutageTask`, the base of every task). Django
discards the broken connection after the request, and checks a kept one before its first use
(`CONN_HEALTH_CHECKS`), so the first request after the database is back gets a fresh one.

Only errors that mean "no connection" count. A lock timeout, a cancelled statement, a deadlock
or a bad query is an OperationalError too, and is still reported as what it is.

Redis out of reach in a web request (the cache behind sign-in throttles and the revocation list)
is answered the same way; downloads check it themselves (`release.distribution`).
"""

import random
from typing import Any

import psycopg
import redis
from celery import Task
from django.conf import settings
from django.db import Error as DjangoDatabaseError
from django.db import connections
from django.http import HttpResponse, JsonResponse

# SQLSTATEs of a lost connection rather than a failed statement: class 08 (connection
# exception), and the server going down or not yet up: 57P01 admin_shutdown (`pg_ctl stop -m
# fast`, a failover), 57P02 crash_shutdown, 57P03 cannot_connect_now (starting or stopping).
_CONNECTION_CLASS = "08"
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})

MESSAGE = "The {service} is unavailable for a moment; please try again shortly."

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unavailable · Weightgate</title></head>
<body><h1>Unavailable for a moment</h1>
<p>Weightgate cannot reach its {service} right now. Please try again in a few seconds.</p>
</body></html>
"""


def database_unavailable(error: BaseException | None) -> bool:
    """Whether `error` (Django's wrapper or psycopg's own) means the database cannot be reached
    or dropped the connection."""
    if isinstance(error, DjangoDatabaseError):
        error = error.__cause__  # Django re-raises psycopg's error as its own, from the original
    if not isinstance(error, psycopg.OperationalError):
        return False
    if error.sqlstate is None:
        # Raised by the client, not the server: psycopg does so only when it cannot connect
        # ("connection failed: ... Connection refused", a timeout, a refused login) or the
        # connection broke ("the connection is closed", "server closed the connection
        # unexpectedly", "connection socket closed"). Every server-side error has a SQLSTATE.
        return True
    return error.sqlstate.startswith(_CONNECTION_CLASS) or error.sqlstate in _SHUTDOWN_STATES


def redis_unavailable(error: BaseException | None) -> bool:
    """Whether `error` means Redis (the cache: sign-in throttles, the revocation list) cannot be
    reached or dropped the connection: no more the request's fault than a database outage."""
    return isinstance(error, redis.ConnectionError | redis.TimeoutError)


def unavailable_response(*, api: bool, service: str = "database") -> HttpResponse:
    """503 with Retry-After: the API's JSON error body for API clients, a short page for people.
    The page renders no template: the portal's layout reads the session and the user, which live
    in the database."""
    response: HttpResponse
    if api:
        message = MESSAGE.format(service=service)
        response = JsonResponse({"error": {"code": "unavailable", "message": message}}, status=503)
    else:
        page = _PAGE.format(service=service)
        response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(settings.DATABASE_RETRY_AFTER_SECONDS)
    return response


# A task waits out an outage for about half an hour: retried after 1, 2, 4... up to 60 seconds
# (each with jitter, so a worker's backlog does not return in one wave), then given up and
# logged as failed like any other error.
TASK_RETRIES = 40
TASK_RETRY_MAX_SECONDS = 60


class RetryOnOutageTask(Task):
    """The base of every task (`config.celery`). A task that meets a database outage is queued
    again with a countdown rather than failed: with acks_late a failed task's message is
    acknowledged, and the work would be lost. Tasks are safe to run twice, so running again
    after a half-done attempt is fine."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as error:
            if not database_unavailable(error):
                raise
            # Drop the broken connections now, not only in Celery's postrun hook (which keeps
            # connections when CELERY_DB_REUSE_MAX is set), and without asking a server that is
            # down whether they still work: the next attempt connects afresh.
            connections.close_all()
            try:
                raise self.retry(
                    exc=error, countdown=_backoff(self.request.retries), max_retries=TASK_RETRIES
                ) from error
            finally:
                # retry() leaves this limit on the task object, where Celery's autoretry_for
                # (STORAGE_RETRIES...) would later take it for its own.
                self.__dict__.pop("override_max_retries", None)


def _backoff(retries: int) -> float:
    ceiling: int = min(TASK_RETRY_MAX_SECONDS, 2**retries)
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not secrets)
