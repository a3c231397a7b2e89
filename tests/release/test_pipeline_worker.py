"""The release pipeline end to end through real Celery worker processes: fan-out hashing at
ingest, pushes and the flip of an unlock. Workers killed mid-push, the object store crashing
and Redis stopping are in test_faults.py."""

import os
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from release import services
from release.models import IngestJob, Phase, Unlock
from release.publishing import blob_present
from release.sample_weights import sample_model_files
from release.services.ingest import INGEST_STALL
from tests.celery_worker import celery_worker, wait_for
from tests.factories import unlock_approved
from tests.staging import ingest_now, stage

pytestmark = pytest.mark.django_db(transaction=True)


def test_workers_hash_every_file_and_seal_the_version():
    from licensing.keys import signing_key_ensure

    signing_key_ensure(purpose="models")
    model = services.model_create(actor=None, org="acme", name="fanout")
    files = sample_model_files(shards=4, seed=os.getpid())

    with celery_worker(concurrency=2):
        job = services.ingest_start(
            actor=None, model=model, version_name="v1", sources={"base": stage(files)}
        )
        wait_for(
            lambda: IngestJob.objects.get(pk=job.pk).state in ("sealed", "failed"),
            what="the ingest to finish",
        )

    job.refresh_from_db()
    assert job.state == IngestJob.State.SEALED, job.error
    assert job.version is not None
    assert job.version.files.count() == len(files)


def test_workers_push_and_flip_an_unlock_for_now(people):
    version, _ = ingest_now(artifacts={"base": sample_model_files(seed=os.getpid() + 1)})

    with celery_worker(concurrency=2):
        unlock = unlock_approved(version, people)
        wait_for(
            lambda: Unlock.objects.get(pk=unlock.pk).state in ("done", "failed"),
            what="the unlock to flip",
        )

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.DONE, unlock.reason
    assert version.artifacts.get(name="base").phase == Phase.GATED
    for f in version.files.all():
        assert blob_present(bucket=settings.S3_BUCKET_GATED, sha256=f.sha256, size=f.size)


def test_an_ingest_whose_messages_were_lost_is_resumed_by_the_sweep():
    from config.celery import app
    from licensing.keys import signing_key_ensure
    from tests.celery_worker import TEST_QUEUE

    signing_key_ensure(purpose="models")
    model = services.model_create(actor=None, org="acme", name="lost")
    files = sample_model_files(shards=2, seed=os.getpid() + 2)
    # Given an ingest whose hashing messages vanished (a broker that restarted empty)...
    job = services.ingest_start(
        actor=None, model=model, version_name="v1", sources={"base": stage(files)}
    )
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(TEST_QUEUE)
    assert services.ingests_resume() == 0  # young: its messages may just be queued behind others
    # ...and that made no progress for longer than the stall limit,
    stalled_at = timezone.now() - INGEST_STALL - timedelta(minutes=1)
    IngestJob.objects.filter(pk=job.pk).update(created_at=stalled_at)

    # when the sweep runs, a worker finishes it.
    assert services.ingests_resume() == 1
    with celery_worker(concurrency=2):
        wait_for(
            lambda: IngestJob.objects.get(pk=job.pk).state in ("sealed", "failed"),
            what="the resumed ingest to finish",
        )

    job.refresh_from_db()
    assert job.state == IngestJob.State.SEALED, job.error
