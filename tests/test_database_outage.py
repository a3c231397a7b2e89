"""A database outage: PostgreSQL stopped, started and restarted under live traffic and a working
Celery worker.

First what counts as an outage, with real errors from a real server (a refused connection, a
terminated one count; a lock timeout or a cancelled statement do not), what a request that meets
one answers, and how a task that meets one retries. Then end to end, on a private PostgreSQL and
Redis (the shared servers are never stopped): gunicorn and a Celery worker on a migrated
database, requests in a loop while the database goes away and comes back.
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from django.db import Error as DjangoDatabaseError
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.views import APIView

from bench.catalog_api import gunicorn_running
from config.celery import app
from config.outages import TASK_RETRIES, database_unavailable
from config.redis_client import redis_client
from release.distribution import BUFFER_KEY
from release.tasks import downloads_flush, heartbeat
from tests.celery_worker import TEST_QUEUE, WORKER_LOG, celery_worker, wait_for
from tests.private_services import free_port, private_postgres, private_redis, redis_pointed_at

ROOT = Path(__file__).resolve().parent.parent

# --- Real errors --------------------------------------------------------------------------------


def shared_server() -> dict[str, Any]:
    """Connection parameters of the shared test server's maintenance database (not the test
    database: these tests take their own connections and kill them)."""
    db = connection.settings_dict
    return {
        "host": db["HOST"],
        "port": db["PORT"],
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }


def refused_connection_error() -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(host="127.0.0.1", port=free_port(), connect_timeout=2)
    return caught.value


def terminated_connection_errors() -> list[psycopg.OperationalError]:
    """What a connection's next two queries raise after the server ended its session (as on
    `pg_ctl stop -m fast`, a failover, or an administrator's pg_terminate_backend)."""
    errors = []
    with psycopg.connect(**shared_server()) as killer, psycopg.connect(**shared_server()) as victim:
        killer.execute("SELECT pg_terminate_backend(%s, 5000)", [victim.info.backend_pid])
        for _ in range(2):
            with pytest.raises(psycopg.OperationalError) as caught:
                victim.execute("SELECT 1")
            errors.append(caught.value)
    return errors


def lock_timeout_error() -> psycopg.OperationalError:
    key = uuid.uuid4().int % 2**62
    with psycopg.connect(**shared_server()) as holder, psycopg.connect(**shared_server()) as waiter:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        waiter.execute("SET lock_timeout = '20ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable) as caught:
            waiter.execute("SELECT pg_advisory_lock(%s)", [key])
    return caught.value


def statement_timeout_error() -> psycopg.OperationalError:
    with psycopg.connect(**shared_server()) as conn:
        conn.execute("SET statement_timeout = '20ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("SELECT pg_sleep(5)")
    return caught.value


def as_django(error: Exception) -> DjangoDatabaseError:
    """The error as Django re-raises it from its database layer."""
    with pytest.raises(DjangoDatabaseError) as caught, connection.wrap_database_errors:
        raise error
    connection.errors_occurred = False  # the shared connection itself is fine
    return caught.value


# --- What counts as an outage ------------------------------------------------------------------


def test_a_refused_or_terminated_connection_is_an_outage():
    refused = refused_connection_error()
    terminated, closed = terminated_connection_errors()

    assert terminated.sqlstate == "57P01"  # admin_shutdown: the server's own word for it
    assert closed.sqlstate is None  # the client's: "the connection is closed"
    for error in (refused, terminated, closed):
        assert database_unavailable(error)
        assert database_unavailable(as_django(error))


def test_a_lock_timeout_or_cancelled_statement_is_not_an_outage():
    for error in (lock_timeout_error(), statement_timeout_error()):
        assert isinstance(error, psycopg.OperationalError)  # the same class as an outage's
        assert not database_unavailable(error)
        assert not database_unavailable(as_django(error))
    assert not database_unavailable(ConnectionRefusedError())  # Redis or S3, say: not ours
    assert not database_unavailable(None)


# --- What a request answers --------------------------------------------------------------------

_raised: list[Exception] = []


def _raise(request: HttpRequest) -> HttpResponse:
    raise _raised[0]


class _RaisingApi(APIView):
    def get(self, request: Any, **kwargs: Any) -> HttpResponse:
        raise _raised[0]


# The URLs of the request tests (ROOT_URLCONF points here), with the project's error handler.
urlpatterns = [
    path("api/v1/probe", _raise),
    path("models/acme/probe", _raise),
    path("acme/probe/resolve/main/config.json", _RaisingApi.as_view()),
]
handler500 = "config.exceptions.server_error"


@pytest.fixture
def probe(settings):
    """A client for the URLs above: each raises the error put in `_raised`."""
    settings.ROOT_URLCONF = __name__
    settings.DATABASE_RETRY_AFTER_SECONDS = 7
    yield Client(raise_request_exception=False)
    _raised.clear()


def test_an_outage_answers_503_with_retry_after_in_the_api_error_body(probe):
    _raised.append(as_django(refused_connection_error()))

    for url in ("/api/v1/probe", "/acme/probe/resolve/main/config.json"):
        response = probe.get(url)

        assert response.status_code == 503
        assert response["Retry-After"] == "7"
        assert response.json()["error"]["code"] == "unavailable"


def test_an_outage_answers_people_with_a_short_page(probe):
    _raised.append(as_django(terminated_connection_errors()[0]))

    response = probe.get("/models/acme/probe")

    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    assert response["Content-Type"].startswith("text/html")
    assert b"try again" in response.content


def test_other_database_errors_are_not_disguised_as_an_outage(probe):
    _raised.append(as_django(lock_timeout_error()))

    for url in ("/api/v1/probe", "/models/acme/probe"):
        response = probe.get(url)

        assert response.status_code == 500
        assert not response.has_header("Retry-After")


# --- What a task does --------------------------------------------------------------------------


def probe_task(errors: list[Exception]) -> tuple[Any, list[int]]:
    """A task of the project's app that raises `errors` in turn, then succeeds."""
    attempts: list[int] = []

    @app.task(name=f"tests.outage_probe_{uuid.uuid4().hex}", shared=False)
    def task() -> str:
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return "done"

    return task, attempts


def test_a_task_that_meets_an_outage_runs_again_until_it_succeeds():
    refused = as_django(refused_connection_error())
    task, attempts = probe_task([refused, refused])

    result = task.apply()  # run here; a retry runs again at once

    assert result.get() == "done"
    assert len(attempts) == 3


def test_a_task_gives_up_after_its_retries_and_other_errors_are_not_retried():
    refused = as_django(refused_connection_error())
    task, attempts = probe_task([refused] * (TASK_RETRIES + 1))
    result = task.apply()
    assert result.failed()
    assert len(attempts) == TASK_RETRIES + 1

    task, attempts = probe_task([as_django(lock_timeout_error())])
    result = task.apply()
    assert result.failed()
    assert len(attempts) == 1


# --- End to end: a private PostgreSQL restarted under traffic ----------------------------------

REQUEST_TIMEOUT = 10.0  # seconds: no answer within this counts as a hang, which fails the test


def seed() -> dict[str, str]:
    """Runs in a child process on the private database (after django.setup()): migrates it, then
    makes a gated model, a developer holding a grant, and their download token; and collects
    the portal's static files, which its pages name through the manifest (not the admin's and
    API docs': not needed)."""
    from django.core.management import call_command

    from licensing import access
    from licensing.tokens import token_create
    from tests.factories import make_user
    from tests.licensing.factories import gated_model

    call_command("migrate", interactive=False, verbosity=0)
    admin = make_user("admin", is_staff=True, is_superuser=True)
    model = gated_model(actor=admin, org="acme", name="tiny")
    developer = make_user("developer")
    access.access_grant_direct(model=model, user=developer, reviewer=admin)
    _, token = token_create(user=developer, name="outage")
    call_command(
        "collectstatic",
        interactive=False,
        verbosity=0,
        ignore_patterns=["admin", "rest_framework", "drf_spectacular_sidecar"],
    )
    return {"token": token}


@dataclass(frozen=True)
class Kind:
    method: str
    path: str
    success: int
    api: bool  # JSON error body, else a page
    token: bool = False


DOWNLOAD = "/api/v1/models/acme/tiny/versions/v1/files/base/part-0.bin"
KINDS = {
    "catalog": Kind("GET", "/api/v1/models/", 200, api=True),
    "download": Kind("GET", DOWNLOAD, 200, api=True, token=True),  # logged, flushed by a task
    "hub": Kind("HEAD", "/acme/tiny/resolve/main/base/part-0.bin", 302, api=True, token=True),
    "page": Kind("GET", "/models/acme/tiny", 200, api=False),
}


@dataclass(frozen=True)
class Answer:
    kind: str
    stage: str  # what the test was doing when the request was sent
    status: int | None  # None: no answer within REQUEST_TIMEOUT, or the connection failed
    headers: dict[str, str]
    body: bytes
    problem: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == KINDS[self.kind].success

    @property
    def clean_503(self) -> bool:
        """503, Retry-After, and the error body the client expects."""
        retry_after = self.headers.get("retry-after", "")
        if self.status != 503 or not retry_after.isdigit() or int(retry_after) < 1:
            return False
        content_type = self.headers.get("content-type", "")
        if not KINDS[self.kind].api:
            return content_type.startswith("text/html")
        if not content_type.startswith("application/json"):
            return False
        if not self.body:  # a HEAD
            return True
        try:
            return bool(json.loads(self.body)["error"]["code"] == "unavailable")
        except (ValueError, KeyError, TypeError):
            return False


class Traffic:
    """Requests in a loop from a thread, every kind in turn, each answer recorded with the stage
    the test was in when it was sent."""

    def __init__(self, base_url: str, token: str) -> None:
        self.answers: list[Answer] = []
        self.stage = "before"
        self._client = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT)
        self._token = token
        self._go = threading.Event()
        self._round = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Traffic":
        self._go.set()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._go.set()
        self._thread.join(timeout=4 * REQUEST_TIMEOUT)
        self._client.close()

    @contextmanager
    def paused(self, then: str) -> Iterator[None]:
        """No request in flight inside; requests resume in stage `then`."""
        self._go.clear()
        with self._round:
            yield
            self.stage = then
        self._go.set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._go.wait()
            with self._round:
                for name in KINDS:
                    self.answers.append(self._send(name))
            time.sleep(0.05)  # the machine is shared: a steady trickle is enough

    def _send(self, name: str) -> Answer:
        kind, stage = KINDS[name], self.stage
        headers = {"Prefer": "no-redirect"}
        if kind.token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._client.request(kind.method, kind.path, headers=headers)
        except httpx.HTTPError as error:
            return Answer(name, stage, None, {}, b"", f"{type(error).__name__}: {error}")
        return Answer(name, stage, response.status_code, dict(response.headers), response.content)

    def seen(self, stage: str, *, succeeded: bool = False, unavailable: bool = False) -> set[str]:
        """The kinds that got such an answer in `stage`."""
        return {
            answer.kind
            for answer in list(self.answers)
            if answer.stage == stage
            and (not succeeded or answer.succeeded)
            and (not unavailable or answer.clean_503)
        }


class WorkerLog:
    """What this test's worker wrote to the shared worker log."""

    def __init__(self) -> None:
        WORKER_LOG.parent.mkdir(exist_ok=True)
        WORKER_LOG.touch()
        self._start = WORKER_LOG.stat().st_size

    def text(self) -> str:
        with WORKER_LOG.open("rb") as log:
            log.seek(self._start)
            return log.read().decode(errors="replace")

    def has(self, line_part: str) -> bool:
        return line_part in self.text()

    def worker_ready(self) -> bool:
        """A worker of this test session's queue said it is ready."""
        return any(TEST_QUEUE in line and " ready." in line for line in self.text().splitlines())


SEED = (
    f"import django, json; django.setup(); from {__name__} import seed; print(json.dumps(seed()))"
)


def query_one(url: str, sql: str) -> Any:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_a_database_restart_fails_requests_cleanly_and_loses_no_work(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="httpx2")  # a line per request otherwise
    with (
        private_postgres() as postgres,
        private_redis(tmp_path / "redis") as redis,
        redis_pointed_at(redis),  # tasks queued here go to the private broker
    ):
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "CELERY_BROKER_URL": redis.url,
            "CELERY_TASK_DEFAULT_QUEUE": TEST_QUEUE,
            "CELERY_TRANSFER_QUEUE": TEST_QUEUE,
            # The loop downloads far faster than anyone would: not what this test is about.
            "DOWNLOAD_RATE_PER_MINUTE": "1000000",
            "DOWNLOAD_DAILY_QUOTA": "1000000",
            "STATIC_ROOT": str(tmp_path / "static"),
        }
        seeded = subprocess.run(
            [sys.executable, "-c", SEED],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = json.loads(seeded.stdout.strip().splitlines()[-1])["token"]
        worker_log = WorkerLog()
        web_log = tmp_path / "gunicorn.log"

        def events() -> int:
            return int(query_one(postgres.url, "SELECT count(*) FROM release_downloadevent"))

        with (
            celery_worker(env_extra=env) as worker,  # starts while gunicorn does
            gunicorn_running({**env, "WEB_THREADS": "2"}, 1, web_log) as web,
        ):
            with Traffic(f"http://127.0.0.1:{web.port}", token) as traffic:
                # Given: everything works, and the worker writes download events.
                wait_for(
                    lambda: traffic.seen("before", succeeded=True) == set(KINDS),
                    timeout=30,
                    what="every kind of request to succeed",
                )
                wait_for(worker_log.worker_ready, timeout=60, what="the worker to start")
                flush_before = downloads_flush.delay().id
                wait_for(
                    lambda: worker_log.has(f"[{flush_before}] succeeded"),
                    timeout=30,
                    what="the first flush",
                )
                assert events() > 0
                # Downloads logged since, waiting in Redis for the next flush.
                wait_for(
                    lambda: redis_client().llen(BUFFER_KEY) > 0,
                    timeout=30,
                    what="downloads to be logged",
                )

                # When: the database stops.
                traffic.stage = "outage"
                postgres.stop()
                # A download of a file the web process answered lately may still be answered
                # from its memory of those reads (licensing.read_cache): no revocation can be
                # written meanwhile. Everything else needs the database ("main" included).
                wait_for(
                    lambda: traffic.seen("outage", unavailable=True) >= set(KINDS) - {"download"},
                    timeout=30,
                    what="every kind of request but downloads to answer 503",
                )
                ready = httpx.get(f"http://127.0.0.1:{web.port}/readyz", timeout=REQUEST_TIMEOUT)
                assert ready.status_code == 503
                assert ready.json()["checks"]["database"] == "unavailable"
                # Work queued while it is down: the worker takes it, cannot reach the
                # database, and must keep it for later.
                during = [downloads_flush.delay().id, heartbeat.delay().id]
                wait_for(
                    lambda: all(worker_log.has(f"[{task_id}] retry:") for task_id in during),
                    timeout=30,
                    what="the worker to retry the tasks",
                )

                # And it comes back.
                postgres.start()
                traffic.stage = "back"
                wait_for(
                    lambda: traffic.seen("back", succeeded=True) == set(KINDS),
                    timeout=30,
                    what="every kind of request to succeed again",
                )
                wait_for(
                    lambda: all(worker_log.has(f"[{task_id}] succeeded") for task_id in during),
                    timeout=60,
                    what="the retried tasks to succeed",
                )

                # A restart while no request runs: every web thread holds a connection to the
                # old server, which must be noticed and replaced, not fail the next request.
                with traffic.paused(then="after restart"):
                    postgres.stop()
                    postgres.start()
                wait_for(
                    lambda: sum(a.stage == "after restart" for a in traffic.answers) >= 20,
                    timeout=30,
                    what="requests after the restart",
                )

            # A last flush takes the downloads logged after the retried one ran.
            flush_after = downloads_flush.delay().id
            wait_for(
                lambda: worker_log.has(f"[{flush_after}] succeeded"),
                timeout=30,
                what="the last flush",
            )
            # The same web process served throughout, and the worker never died.
            assert web.alive()
            assert web_log.read_text().count("Booting worker") == 1
            assert worker.poll() is None

        # Then: no answer was anything but a success or a clean 503, and none hung.
        answers = traffic.answers
        assert [a for a in answers if not (a.succeeded or a.clean_503)] == []
        assert [a for a in answers if a.stage == "after restart" and not a.succeeded] == []
        # Nothing lost: the heartbeat queued during the outage was recorded, and every download
        # answered is in the database, once.
        assert query_one(postgres.url, "SELECT count(*) FROM release_heartbeat") == 1
        downloads = [a for a in answers if a.kind == "download"]
        assert sum(a.succeeded for a in downloads) <= events() <= len(downloads)
