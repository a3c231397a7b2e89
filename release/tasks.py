"""Celery tasks of the release app: thin wrappers that call services."""

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import shared_task

from release import services
from release.models import IngestJob, Unlock
from release.services import unlocks

logger = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, soft_time_limit=20, time_limit=30)
def heartbeat(self: Any) -> None:
    """Queued by beat every HEARTBEAT_INTERVAL; running it proves beat, broker, worker and
    database all work. The admin flags a heartbeat older than twice the interval."""
    services.heartbeat_record(worker=str(self.request.hostname or "unknown"))


# Storage errors worth retrying: the object store or the network, not the content.
TRANSIENT_STORAGE_ERRORS = (BotoCoreError, ClientError, ConnectionError, TimeoutError)
# For tasks that move bytes: retried with exponential backoff and jitter, for about half an hour.
STORAGE_RETRIES = {
    "autoretry_for": TRANSIENT_STORAGE_ERRORS,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(bind=True, **STORAGE_RETRIES)
def ingest_hash_file(self: Any, file_id: int) -> None:
    """Stream one staged file once: sha256, size, header checks. The task id (the same in every
    retry) is the claim, so a retry after a database outage takes its own claim back at once."""
    services.ingest_file_hash(file_id=file_id, claim=self.request.id or "")


@shared_task
def ingest_finalize(job_id: int) -> None:
    """Check indexes against shard headers, then seal and sign the version (or fail the job)."""
    try:
        services.ingest_finalize(job_id=job_id)
    except IngestJob.DoesNotExist:
        logger.warning("ingest_finalize: ingest #%s no longer exists; nothing to do", job_id)


@shared_task(soft_time_limit=50, time_limit=60)
def ingests_resume() -> None:
    """Beat's sweep for ingests whose hashing messages were lost."""
    services.ingests_resume()


@shared_task(soft_time_limit=50, time_limit=60)
def unlocks_tick() -> None:
    """Beat's periodic nudge: pre-stage unlocks coming due, re-queue stalled pushes, flip the
    ready ones whose time has come, alert on late ones."""
    unlocks.unlocks_tick()


@shared_task(soft_time_limit=50, time_limit=60)
def unlock_advance(unlock_id: int) -> None:
    """Move one unlock forward now (after an approval, or when its last file is verified)."""
    try:
        unlocks.unlock_advance(unlock_id=unlock_id)
    except Unlock.DoesNotExist:
        logger.warning("unlock_advance: unlock #%s no longer exists; nothing to do", unlock_id)


@shared_task(**STORAGE_RETRIES)
def unlock_push_file(unlock_file_id: int) -> None:
    """Push one file to distribution storage, verified; safe to run twice."""
    unlocks.unlock_push_file(unlock_file_id=unlock_file_id)


@shared_task(soft_time_limit=100, time_limit=120)
def downloads_flush() -> None:
    """Write buffered download events and daily counts in batches (beat, every 10 s)."""
    from release.distribution import downloads_flush as flush

    # Bounded: under a flood, the next beat tick takes over rather than one task running on.
    for _ in range(20):
        if flush() == 0:
            break


@shared_task(**STORAGE_RETRIES)
def open_blob_publish(sha256: str) -> None:
    """Copy an open artifact's blob to the public bucket (after the flip)."""
    unlocks.open_blobs_publish(sha256=sha256)
