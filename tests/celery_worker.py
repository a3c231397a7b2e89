"""A real Celery worker process for tests, on the test database and a queue of its own so that
no other worker on the machine (the demo's, say) can take the test's tasks."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent
WORKER_LOG = ROOT / ".local" / "test-workers.log"


def test_database_url() -> str:
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(db['USER'])}{password}@{db['HOST']}:{db['PORT']}/{quote(db['NAME'])}"


# One queue for this test session: nothing the tests publish can reach another worker.
TEST_QUEUE = f"test-{uuid.uuid4().hex[:12]}"


def route_tasks_to_test_queue() -> None:
    """Send every task, control and transfer alike, to TEST_QUEUE."""
    app.conf.task_default_queue = TEST_QUEUE
    app.conf.task_routes = {name: {"queue": TEST_QUEUE} for name in app.conf.task_routes or {}}
    for cached in ("default_queue", "queues", "router"):  # Celery caches its routing
        app.amqp.__dict__.pop(cached, None)
    app.amqp.flush_routes()


@contextmanager
def celery_worker(
    *,
    concurrency: int = 1,
    env_extra: dict[str, str] | None = None,
    args_extra: Sequence[str] = (),
    queue: str = TEST_QUEUE,
    hostname: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process on the test database, consuming TEST_QUEUE (or `queue`: a worker kept
    idle until told to `add_consumer`). With concurrency 1 it runs tasks in its own process
    (solo pool), so killing it kills the work mid-flight. `args_extra` are more `celery worker`
    options (`--beat`, say)."""
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_TASK_DEFAULT_QUEUE": TEST_QUEUE,
        "CELERY_TRANSFER_QUEUE": TEST_QUEUE,
        **(env_extra or {}),
    }
    WORKER_LOG.parent.mkdir(exist_ok=True)
    log = WORKER_LOG.open("ab")  # read it when a worker test fails
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            str(concurrency),
            "--pool",
            "solo" if concurrency == 1 else "prefork",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            hostname or f"{TEST_QUEUE}-{uuid.uuid4().hex[:4]}@%h",
            *args_extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for(
    condition, *, timeout: float = 180.0, what: str = "condition", interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
