"""Celery end to end: a task queued here runs in a real worker process against the test
database, through the real Redis broker."""

import pytest

from release.models import Heartbeat
from release.selectors import heartbeat_status
from release.tasks import heartbeat
from tests.celery_worker import celery_worker, wait_for


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_heartbeat_task():
    assert not heartbeat_status().healthy

    with celery_worker() as worker:
        heartbeat.delay()
        wait_for(lambda: Heartbeat.objects.exists(), what="the worker to record a heartbeat")

    beat = Heartbeat.objects.get()
    assert beat.worker.startswith("test-")  # recorded by the worker, not this process
    assert heartbeat_status().healthy
    assert worker.returncode is not None


def test_celery_is_configured_for_safe_redelivery():
    from config.celery import app

    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.task_time_limit > 0
    assert "heartbeat" in app.conf.beat_schedule


@pytest.mark.django_db
def test_tasks_for_rows_that_no_longer_exist_do_nothing(caplog):
    from release.tasks import ingest_finalize, unlock_advance

    ingest_finalize.apply(args=[987654])
    unlock_advance.apply(args=[987654])

    assert "ingest #987654 no longer exists" in caplog.text
    assert "unlock #987654 no longer exists" in caplog.text
