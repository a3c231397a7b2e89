"""Ingest: a staging prefix per artifact becomes a sealed, signed version, or a report of every
bad file and nothing else. Heavy reading happens in `release.staging`, outside transactions."""

import dataclasses
import logging
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from licensing.services import audit_record
from release.models import FileParts, IngestFile, IngestJob, Model, Version
from release.safetensors_check import INDEX_NAME, InvalidWeights, index_check
from release.services.catalog import (
    Actor,
    _validate_name,
    artifact_create,
    file_add,
    version_create,
    version_seal,
)
from release.staging import StagedObject, staged_object_digest, staging_list

logger = logging.getLogger(__name__)

INGEST_LEASE = timedelta(hours=1)  # a claim older than this belonged to a worker that died
# A hashing ingest with no file claimed for this long has lost its messages (a broker restarted
# empty, say): ingests_resume queues them again.
INGEST_STALL = timedelta(minutes=10)


def ingest_start(
    *, actor: Actor, model: Model, version_name: str, sources: dict[str, str]
) -> IngestJob:
    """List each artifact's staging prefix and queue one hashing task per file. Any problem with
    the listing (empty prefix, unsafe or duplicate path, wrong bucket) refuses the whole ingest
    with a report of every problem, and nothing is created."""
    _validate_name(version_name, "version name")
    if not sources:
        raise DomainError("name at least one artifact=s3://... source", code="invalid_source")
    for artifact in sources:
        _validate_name(artifact, "artifact name")
    if model.versions.filter(name=version_name).exists():
        raise NotAllowed(
            f"{model.repo_id} already has a version {version_name!r}", code="already_exists"
        )
    objects, problems = staging_list(sources)
    if problems:
        raise DomainError("ingest refused:\n" + "\n".join(problems), code="invalid_source")
    try:
        with transaction.atomic():
            job = IngestJob.objects.create(
                model=model,
                version_name=version_name,
                sources=sources,
                created_by=actor if isinstance(actor, User) else None,
            )
            IngestFile.objects.bulk_create(
                IngestFile(
                    job=job, artifact=o.artifact, path=o.path, staging_key=o.key, listed_size=o.size
                )
                for o in objects
            )
            audit_record(
                actor=actor,
                action="ingest.started",
                subject_type="ingest",
                subject_id=job.pk,
                data={
                    "model": model.repo_id,
                    "version": version_name,
                    "sources": sources,
                    "files": len(objects),
                },
            )
            file_ids = list(job.files.values_list("pk", flat=True))
            transaction.on_commit(lambda: _queue_hashing(file_ids))
    except IntegrityError as error:
        raise NotAllowed(
            f"an ingest of {model.repo_id}@{version_name} is already running",
            code="already_running",
        ) from error
    return job


def _queue_hashing(file_ids: list[int]) -> None:
    from release.tasks import ingest_hash_file

    for file_id in file_ids:
        ingest_hash_file.delay(file_id)


def ingests_resume() -> int:
    """Queue again the work of hashing ingests that stalled: files still pending or claimed by a
    worker that died, or the finalisation when no file is left. Repeats are harmless: each file
    is claimed with a conditional UPDATE and finalising runs once. Returns the jobs resumed."""
    from release.tasks import ingest_finalize

    now = timezone.now()
    quiet_since = now - INGEST_STALL
    stalled = IngestJob.objects.filter(state=IngestJob.State.HASHING, created_at__lt=quiet_since)
    resumed = 0
    for job in stalled.exclude(files__claimed_at__gte=quiet_since):
        unfinished = job.files.filter(
            Q(state=IngestFile.State.PENDING)
            | Q(state=IngestFile.State.RUNNING, claimed_at__lt=now - INGEST_LEASE)
        )
        file_ids = list(unfinished.values_list("pk", flat=True))
        if file_ids:
            _queue_hashing(file_ids)
        elif not job.files.filter(state=IngestFile.State.RUNNING).exists():
            ingest_finalize.delay(job.pk)
        else:
            continue  # a file is still being hashed by a live worker
        logger.warning("ingest #%s stalled; queued %s file(s) again", job.pk, len(file_ids))
        resumed += 1
    return resumed


def ingest_file_hash(*, file_id: int, claim: str = "") -> None:
    """Hash and check one staged file, then hand over to finalisation if it was the last.
    Safe to run twice: a file already done, or claimed by another live worker, is left alone.
    `claim` names the caller (its task id): a file it claimed itself, say before a database
    outage made it retry, is taken back at once instead of after INGEST_LEASE."""
    now = timezone.now()
    claimable = Q(state=IngestFile.State.PENDING) | Q(
        state=IngestFile.State.RUNNING, claimed_at__lt=now - INGEST_LEASE
    )
    if claim:
        claimable |= Q(state=IngestFile.State.RUNNING, claimed_by=claim)
    claimed = (
        IngestFile.objects.filter(pk=file_id)
        .filter(claimable)
        .update(state=IngestFile.State.RUNNING, claimed_at=now, claimed_by=claim)
    )
    if not claimed:
        return
    row = IngestFile.objects.get(pk=file_id)
    staged = StagedObject(row.artifact, row.path, row.staging_key, row.listed_size)
    try:
        digest = staged_object_digest(staged)  # the heavy part: no transaction, no lock
    except InvalidWeights as error:
        # Messages quote the file (names, shapes): bounded, a hostile header cannot bloat rows.
        _ingest_file_finish(row, state=IngestFile.State.FAILED, error=str(error)[:1000])
        return
    except Exception:
        # A storage error: give the claim back so the task's retry can take it again.
        IngestFile.objects.filter(pk=file_id).update(state=IngestFile.State.PENDING)
        raise
    _ingest_file_finish(
        row,
        state=IngestFile.State.DONE,
        size=digest.size,
        sha256=digest.sha256,
        details=digest.details,
        parts=dataclasses.asdict(digest.parts) if digest.parts else None,
    )


def _ingest_file_finish(row: IngestFile, **result: Any) -> None:
    """Record one file's result and, if it was the last, queue the finalisation."""
    with transaction.atomic():
        # Finishers of one job take turns on the job row. Without it, two workers finishing the
        # last two files at once each see the other's file still running (its update is not
        # committed yet), and neither queues the finalisation: the ingest would hang.
        IngestJob.objects.select_for_update().filter(pk=row.job_id).values_list("pk").first()
        IngestFile.objects.filter(pk=row.pk).update(**result)
        unfinished = IngestFile.objects.filter(
            job_id=row.job_id, state__in=[IngestFile.State.PENDING, IngestFile.State.RUNNING]
        ).exists()
        if not unfinished:
            from release.tasks import ingest_finalize

            job_id = row.job_id
            transaction.on_commit(lambda: ingest_finalize.delay(job_id))


def ingest_finalize(*, job_id: int) -> IngestJob:
    """Once every file is hashed: check the indexes against the shards' headers, then create
    the version, record its files, seal and sign it, all in one transaction; or fail the job
    with a report naming every bad file. Runs once: the job row is claimed under a lock."""
    with transaction.atomic():
        # The job row alone: the model row stays free for other transactions' foreign key
        # checks at commit (tests/release/test_lock_scope.py).
        job = (
            IngestJob.objects.select_for_update(of=("self",)).select_related("model").get(pk=job_id)
        )
        files = list(job.files.order_by("path"))
        if job.state != IngestJob.State.HASHING or any(
            f.state in (IngestFile.State.PENDING, IngestFile.State.RUNNING) for f in files
        ):
            return job
        problems = [f"{f.path}: {f.error}" for f in files if f.state == IngestFile.State.FAILED]
        if not problems:
            problems = _index_problems(files)
        if problems:
            return _ingest_fail(job, problems)
        try:
            with transaction.atomic():
                version = _ingest_seal(job, files)
        except DomainError as error:
            return _ingest_fail(job, [error.message])
        job.state, job.version, job.finished_at = IngestJob.State.SEALED, version, timezone.now()
        job.save(update_fields=["state", "version", "finished_at"])
    return job


def _index_problems(files: list[IngestFile]) -> list[str]:
    # Done shards always carry {tensor: bytes} (see release.staging.staged_object_digest).
    shards: dict[str, dict[str, int]] = {
        f.path: f.details for f in files if f.path.endswith(".safetensors") and f.details
    }
    problems = []
    for index in (f for f in files if f.path.rsplit("/", 1)[-1] == INDEX_NAME):
        try:
            index_check(index.details, index_path=index.path, shards=shards)
        except InvalidWeights as error:
            problems.append(f"{index.path}: {error}")
    return problems


def _ingest_seal(job: IngestJob, files: list[IngestFile]) -> Version:
    actor = job.created_by
    version = version_create(actor=actor, model=job.model, name=job.version_name)
    artifacts = {
        name: artifact_create(actor=actor, version=version, name=name)
        for name in sorted({f.artifact for f in files})
    }
    for f in files:
        assert f.size is not None  # done files always have one
        file = file_add(
            artifact=artifacts[f.artifact],
            path=f.path,
            size=f.size,
            sha256=f.sha256,
            storage_key=f.staging_key,
        )
        if f.parts:
            FileParts.objects.create(file=file, **f.parts)
    return version_seal(actor=actor, version=version)


def _ingest_fail(job: IngestJob, problems: list[str]) -> IngestJob:
    job.state, job.error, job.finished_at = (
        IngestJob.State.FAILED,
        "\n".join(problems),
        timezone.now(),
    )
    job.save(update_fields=["state", "error", "finished_at"])
    audit_record(
        actor=job.created_by,
        action="ingest.failed",
        subject_type="ingest",
        subject_id=job.pk,
        data={"problems": problems[:50]},
    )
    return job
