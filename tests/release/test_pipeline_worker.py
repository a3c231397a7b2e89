"""The release pipeline end to end through real Celery worker processes: fan-out hashing at
ingest, pushes and the flip of an unlock, and a worker killed in the middle of a push."""

import hashlib
import os
import signal
from datetime import UTC, datetime

import pytest
from django.conf import settings

from release import services
from release.models import IngestJob, Model, Phase, Unlock, UnlockFile, blob_key
from release.publishing import blob_present
from release.sample_weights import sample_model_files
from release.storage import s3_client
from tests.celery_worker import celery_worker, wait_for
from tests.factories import make_user
from tests.staging import ingest_now, stage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people():
    return (
        make_user("scheduler", is_staff=True),
        make_user("alice", is_staff=True),
        make_user("bob", is_staff=True),
    )


def schedule_now(version, people, artifacts=("base",)):
    scheduler, *approvers = people
    unlock = services.unlock_schedule(
        actor=scheduler,
        version=version,
        artifacts=list(artifacts),
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC),
    )
    for person in approvers:
        services.unlock_approve(unlock=unlock, approver=person)  # the last one queues the work
    return unlock


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
        unlock = schedule_now(version, people)
        wait_for(
            lambda: Unlock.objects.get(pk=unlock.pk).state in ("done", "failed"),
            what="the unlock to flip",
        )

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.DONE, unlock.reason
    assert version.artifacts.get(name="base").phase == Phase.GATED
    for f in version.files.all():
        assert blob_present(bucket=settings.S3_BUCKET_GATED, sha256=f.sha256, size=f.size)


def test_a_worker_killed_mid_push_is_replaced_and_the_publish_completes(people, settings):
    """Kill -9 a worker while it pushes a big file; once its lease runs out the tick hands the
    push to a new worker, which completes it: one verified blob, no upload left behind."""
    settings.UNLOCK_PUSH_LEASE_SECONDS = 2
    big = os.urandom(1024) * (200 * 1024)  # 200 MiB: four 64 MiB parts, several seconds
    version, _ = ingest_now(artifacts={"base": {"weights.bin": big}})
    blob = version.files.get()
    short_lease = {"UNLOCK_PUSH_LEASE_SECONDS": "2"}

    with celery_worker(env_extra=short_lease) as doomed:
        unlock = schedule_now(version, people)
        wait_for(
            lambda: UnlockFile.objects.filter(
                unlock=unlock, bytes_done__gt=0, state="pushing"
            ).exists(),
            what="the push to start",
        )
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()

    row = UnlockFile.objects.get(unlock=unlock)
    assert row.state == UnlockFile.State.PUSHING  # orphaned: nobody is working on it
    assert not blob_present(bucket=settings.S3_BUCKET_GATED, sha256=blob.sha256, size=blob.size)

    with celery_worker(env_extra=short_lease):
        assert row.lease_until is not None
        wait_for(
            lambda: row.lease_until < datetime.now(UTC), what="the dead worker's lease to run out"
        )
        services.unlocks_tick()  # what beat does every few seconds
        wait_for(
            lambda: Unlock.objects.get(pk=unlock.pk).state in ("done", "failed"),
            what="the unlock to complete",
        )

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.DONE, unlock.reason
    assert UnlockFile.objects.get(pk=row.pk).attempts == 2
    stored = s3_client().get_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(blob.sha256))
    digest = hashlib.sha256()
    for chunk in stored["Body"].iter_chunks(8 * 1024 * 1024):
        digest.update(chunk)
    assert digest.hexdigest() == blob.sha256
    leftovers = s3_client().list_multipart_uploads(
        Bucket=settings.S3_BUCKET_GATED, Prefix=blob_key(blob.sha256)
    )
    assert not leftovers.get("Uploads")
    assert Model.objects.filter(pk=version.model_id).exists()
