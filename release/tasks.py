"""Celery tasks of the release app: thin wrappers that call services."""

from typing import Any

from celery import shared_task

from release import services


@shared_task(bind=True, ignore_result=True, soft_time_limit=20, time_limit=30)
def heartbeat(self: Any) -> None:
    """Queued by beat every HEARTBEAT_INTERVAL; running it proves beat, broker, worker and
    database all work. The admin flags a heartbeat older than twice the interval."""
    services.heartbeat_record(worker=str(self.request.hostname or "unknown"))
