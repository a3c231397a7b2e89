"""Celery's side of operations, wired through Celery's signals (connected when config.celery is
imported, in web and worker processes alike):

- a task queued while a request (or another task) has a request id carries it in a message
  header, and the task's log lines carry it again in the worker;
- every task run is counted by outcome and timed;
- a worker started with CELERY_METRICS_PORT serves its metrics over HTTP from its main process.
  With the prefork pool the tasks run in child processes, so their values reach the main
  process only through PROMETHEUS_MULTIPROC_DIR (see config.metrics); the solo and thread pools
  need no directory.
"""

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)

from config import metrics, request_id

logger = logging.getLogger(__name__)

# task id -> (start time, the request id that was current before the task set its own). A pool
# process runs one task at a time, the thread pool several: hence per task id.
_running: dict[str, tuple[float, str | None]] = {}


@before_task_publish.connect(dispatch_uid="config.task_signals.carry_request_id")
def _carry_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    current = request_id.get()
    if current is not None and headers is not None:
        headers[request_id.TASK_HEADER] = current


@task_prerun.connect(dispatch_uid="config.task_signals.task_started")
def _task_started(task_id: str, task: Any, **kwargs: Any) -> None:
    carried = task.request.get(request_id.TASK_HEADER)
    previous = request_id.get()
    _running[task_id] = (time.perf_counter(), previous)
    # Run eagerly (`apply()`), a task keeps the caller's id. A task queued by beat has none: it
    # gets its own, which the tasks it queues inherit.
    request_id.set_current(
        request_id.accept_or_new(carried if isinstance(carried, str) else previous)
    )


@task_postrun.connect(dispatch_uid="config.task_signals.task_finished")
def _task_finished(task_id: str, task: Any, state: str | None = None, **kwargs: Any) -> None:
    started, previous = _running.pop(task_id, (None, None))
    metrics.celery_task_observe(
        task=task.name,
        state=state,
        seconds=time.perf_counter() - started if started is not None else None,
    )
    # Whatever was current before (in a worker: nothing) is current again.
    request_id.set_current(previous)


@worker_init.connect(dispatch_uid="config.task_signals.serve_metrics")
def _serve_worker_metrics(**kwargs: Any) -> None:
    """In the worker's main process, before the pool starts."""
    from django.conf import settings
    from prometheus_client import start_http_server

    if not settings.CELERY_METRICS_PORT:
        return
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    if directory:
        # The worker that serves a directory owns it: values of an earlier run would be summed
        # with this one's (prometheus_client asks for a clean directory at each start).
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    start_http_server(
        settings.CELERY_METRICS_PORT,
        addr=settings.CELERY_METRICS_ADDR,
        registry=metrics.scrape_registry(directory),
    )
    logger.info(
        "serving worker metrics on %s:%s",
        settings.CELERY_METRICS_ADDR,
        settings.CELERY_METRICS_PORT,
    )


@worker_process_shutdown.connect(dispatch_uid="config.task_signals.process_gone")
def _pool_process_gone(**kwargs: Any) -> None:
    from django.conf import settings

    if settings.PROMETHEUS_MULTIPROC_DIR:
        from prometheus_client import multiprocess

        directory = settings.PROMETHEUS_MULTIPROC_DIR
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
