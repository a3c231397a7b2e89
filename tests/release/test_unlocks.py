"""Unlocks: approvals like protected environments, pre-staging ahead of time, a flip at
not_before only when every file is verified in place. Real SeaweedFS and PostgreSQL; the tasks'
work is called directly (a real worker runs it in test_pipeline_worker.py)."""

import base64
import contextlib
import hashlib
import itertools
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Group

from config.errors import DomainError, NotAllowed
from licensing.models import AuditEvent
from release import services
from release.models import (
    Artifact,
    Blob,
    FileParts,
    Phase,
    ReleasePolicy,
    Unlock,
    UnlockFile,
    blob_key,
)
from release.publishing import blob_present
from release.sample_weights import sample_model_files, sample_tokenizer_files
from release.selectors import unlock_progress, unlocks_needing_attention
from release.services.unlocks import unlock_advance, unlock_push_file
from release.storage import s3_client
from tests.factories import make_release, make_user
from tests.staging import ingest_now, overwrite

# Blobs are content-addressed and the buckets outlive each test: every test makes bytes of its own.
SEEDS = itertools.count(random.randrange(1 << 30))


def fresh_model_files():
    return sample_model_files(seed=next(SEEDS))


@pytest.fixture
def approvers(db):
    return make_user("alice", is_staff=True), make_user("bob", is_staff=True)


@pytest.fixture
def release_v1(db):
    version, sources = ingest_now(
        artifacts={"base": fresh_model_files(), "tokenizer": sample_tokenizer_files()}
    )
    return version, sources


def schedule(version, staff, *, at=None, target=Phase.GATED, artifacts=("base",)):
    at = at or datetime.now(UTC) + timedelta(days=2)
    return services.unlock_schedule(
        actor=staff, version=version, artifacts=list(artifacts), target_phase=target, not_before=at
    )


def push_all(unlock):
    for row_id in unlock.files.values_list("pk", flat=True):
        unlock_push_file(unlock_file_id=row_id)


def phase_of(version, name):
    return Artifact.objects.get(version=version, name=name).phase


# --- approvals ----------------------------------------------------------------------------


def test_two_other_people_must_approve(release_v1, staff, approvers):
    unlock = schedule(release_v1[0], staff)
    alice, bob = approvers

    assert unlock.state == Unlock.State.AWAITING_APPROVAL
    services.unlock_approve(unlock=unlock, approver=alice)
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.AWAITING_APPROVAL
    services.unlock_approve(unlock=unlock, approver=bob)
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.SCHEDULED
    actions = list(
        AuditEvent.objects.filter(subject_type="unlock").values_list("action", flat=True)
    )
    assert actions == ["unlock.scheduled", "unlock.approved", "unlock.approved"]


def test_self_approval_is_refused(release_v1, staff):
    unlock = schedule(release_v1[0], staff)

    with pytest.raises(NotAllowed) as refused:
        services.unlock_approve(unlock=unlock, approver=staff)

    assert refused.value.code == "self_approval"
    assert not unlock.approvals.exists()


def test_approving_twice_is_refused(release_v1, staff, approvers):
    unlock = schedule(release_v1[0], staff)
    services.unlock_approve(unlock=unlock, approver=approvers[0])

    with pytest.raises(NotAllowed) as refused:
        services.unlock_approve(unlock=unlock, approver=approvers[0])

    assert refused.value.code == "already_decided"


def test_non_staff_may_not_schedule_or_approve(release_v1, staff, outsider):
    with pytest.raises(NotAllowed, match="only staff"):
        schedule(release_v1[0], outsider)
    unlock = schedule(release_v1[0], staff)
    with pytest.raises(NotAllowed, match="only staff"):
        services.unlock_approve(unlock=unlock, approver=outsider)


def test_required_roles_must_be_covered_and_others_may_not_approve(release_v1, staff, approvers):
    version = release_v1[0]
    ReleasePolicy.objects.create(
        model=version.model, required_approvals=2, required_roles=["legal", "safety"]
    )
    alice, bob = approvers
    carol = make_user("carol", is_staff=True)
    outsider_staff = make_user("dave", is_staff=True)
    legal, safety = Group.objects.create(name="legal"), Group.objects.create(name="safety")
    alice.groups.add(legal)
    bob.groups.add(legal)
    carol.groups.add(safety)
    unlock = schedule(version, staff)

    with pytest.raises(NotAllowed) as refused:
        services.unlock_approve(unlock=unlock, approver=outsider_staff)
    services.unlock_approve(unlock=unlock, approver=alice)
    services.unlock_approve(unlock=unlock, approver=bob)
    still_waiting = Unlock.objects.get(pk=unlock.pk).state
    services.unlock_approve(unlock=unlock, approver=carol)

    assert refused.value.code == "missing_role"
    assert still_waiting == Unlock.State.AWAITING_APPROVAL  # two approvals, no safety yet
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.SCHEDULED


def test_a_rejection_with_a_reason_cancels(release_v1, staff, approvers):
    unlock = schedule(release_v1[0], staff)

    with pytest.raises(DomainError, match="needs a reason"):
        services.unlock_reject(unlock=unlock, approver=approvers[0], comment=" ")
    services.unlock_reject(unlock=unlock, approver=approvers[0], comment="eval not done")

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.CANCELLED
    assert "eval not done" in unlock.reason
    with pytest.raises(NotAllowed):
        services.unlock_approve(unlock=unlock, approver=approvers[1])


def test_rescheduling_clears_approvals(release_v1, staff, approvers):
    unlock = schedule(release_v1[0], staff)
    for person in approvers:
        services.unlock_approve(unlock=unlock, approver=person)

    later = datetime.now(UTC) + timedelta(days=9)
    services.unlock_reschedule(unlock=unlock, actor=staff, not_before=later)

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.AWAITING_APPROVAL
    assert unlock.not_before == later
    assert not unlock.approvals.exists()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"target": Phase.PROPRIETARY}, "invalid_phase"),
        ({"target": Phase.WITHDRAWN}, "invalid_phase"),
        ({"artifacts": ("nope",)}, "invalid_artifacts"),
        ({"artifacts": ()}, "invalid_artifacts"),
        ({"at": datetime(2026, 12, 1, 9, 0)}, "invalid_time"),  # noqa: DTZ001 - the point
    ],
)
def test_bad_schedules_are_refused(release_v1, staff, kwargs, code):
    with pytest.raises(DomainError) as refused:
        schedule(release_v1[0], staff, **kwargs)

    assert refused.value.code == code
    assert not Unlock.objects.exists()


def test_backward_and_overlapping_unlocks_are_refused(release_v1, staff):
    version = release_v1[0]
    schedule(version, staff, target=Phase.OPEN)

    with pytest.raises(NotAllowed) as overlap:
        schedule(version, staff, target=Phase.GATED)
    unsealed = make_release(org="acme", name="llm", version="v2", seal=False)
    with pytest.raises(NotAllowed) as not_sealed:
        schedule(unsealed, staff)

    assert overlap.value.code == "unlock_conflict"
    assert not_sealed.value.code == "version_unsealed"


def test_open_artifact_cannot_be_unlocked_back_to_gated(staff):
    version = make_release(artifacts={"base": Phase.OPEN})

    with pytest.raises(NotAllowed) as refused:
        schedule(version, staff, target=Phase.GATED)

    assert refused.value.code == "phase_transition_refused"


# --- pre-staging and the flip ----------------------------------------------------------------


def approved(version, staff, approvers, **kwargs):
    unlock = schedule(version, staff, **kwargs)
    for person in approvers:
        services.unlock_approve(unlock=unlock, approver=person)
    return unlock


def test_prestaged_ahead_then_flipped_at_not_before(release_v1, staff, approvers):
    # Time travel only around database work: S3 refuses requests signed days off its clock.
    version = release_v1[0]
    now = datetime.now(UTC)
    unlock = approved(version, staff, approvers, at=now + timedelta(days=2))

    services.unlocks_tick()  # two days early: outside the 24 h lead, nothing happens
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.SCHEDULED
    with time_machine.travel(now + timedelta(days=1, hours=1), tick=False):
        services.unlocks_tick()
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.STAGING
    push_all(unlock)
    services.unlocks_tick()
    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.READY
    assert phase_of(version, "base") == Phase.PROPRIETARY  # pushed, but not yet served
    for f in version.files.filter(artifact__name="base"):
        assert blob_present(bucket=settings.S3_BUCKET_GATED, sha256=f.sha256, size=f.size)

    with time_machine.travel(now + timedelta(days=2), tick=False):
        services.unlocks_tick()

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.DONE
    assert unlock.flipped_at is not None
    assert phase_of(version, "base") == Phase.GATED
    assert phase_of(version, "tokenizer") == Phase.PROPRIETARY
    progress = unlock_progress(unlock=unlock)
    assert progress.files_done == progress.files_total == 4
    assert progress.bytes_done == progress.bytes_total > 0
    assert AuditEvent.objects.filter(action="unlock.done", subject_id=str(unlock.pk)).exists()


def test_due_but_not_verified_waits_and_alerts(release_v1, staff, approvers):
    version = release_v1[0]
    now = datetime.now(UTC)
    unlock = approved(version, staff, approvers, at=now + timedelta(hours=1))
    services.unlocks_tick()  # staging starts; no worker pushes anything

    with time_machine.travel(now + timedelta(hours=2), tick=False):
        services.unlocks_tick()
        services.unlocks_tick()  # alerts once, not on every tick

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.STAGING
    assert unlock.delayed_since is not None
    assert phase_of(version, "base") == Phase.PROPRIETARY
    assert AuditEvent.objects.filter(action="unlock.delayed").count() == 1
    assert list(unlocks_needing_attention()) == [unlock]

    push_all(unlock)
    with time_machine.travel(now + timedelta(hours=2), tick=False):
        services.unlocks_tick()

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE
    assert phase_of(version, "base") == Phase.GATED
    assert list(unlocks_needing_attention()) == []


def test_unlock_for_now_pushes_then_flips(release_v1, staff, approvers):
    version = release_v1[0]
    unlock = approved(
        version,
        staff,
        approvers,
        at=datetime.now(UTC),
        target=Phase.OPEN,
        artifacts=("base", "tokenizer"),
    )

    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    unlock_advance(unlock_id=unlock.pk)

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE
    assert set(Artifact.objects.filter(version=version).values_list("phase", flat=True)) == {
        Phase.OPEN
    }


def test_corrupted_staging_byte_stops_the_unlock_and_publishes_nothing(
    release_v1, staff, approvers
):
    version, sources = release_v1
    shard = version.files.get(path="model-00001-of-00002.safetensors")
    corrupted = bytearray(
        s3_client()
        .get_object(Bucket=settings.S3_BUCKET_STAGING, Key=shard.storage_key)["Body"]
        .read()
    )
    corrupted[-1] ^= 0xFF
    overwrite(sources["base"], shard.path, bytes(corrupted))
    unlock = approved(version, staff, approvers, at=datetime.now(UTC))

    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    unlock_advance(unlock_id=unlock.pk)

    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.FAILED
    assert shard.path in unlock.reason
    assert "sha256" in unlock.reason
    assert UnlockFile.objects.get(unlock=unlock, file=shard).state == UnlockFile.State.FAILED
    assert phase_of(version, "base") == Phase.PROPRIETARY
    assert not blob_present(bucket=settings.S3_BUCKET_GATED, sha256=shard.sha256, size=shard.size)
    assert not Blob.objects.filter(sha256=shard.sha256).exists()
    assert AuditEvent.objects.filter(action="unlock.failed").exists()


def test_identical_blobs_are_pushed_once(staff, approvers):
    files = fresh_model_files()
    first, _ = ingest_now(version="v1", artifacts={"base": files})
    second, _ = ingest_now(version="v2", artifacts={"base": files})
    for version in (first, second):
        unlock = approved(version, staff, approvers, at=datetime.now(UTC))
        unlock_advance(unlock_id=unlock.pk)
        push_all(unlock)
        unlock_advance(unlock_id=unlock.pk)
        assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE

    assert Blob.objects.filter(bucket=settings.S3_BUCKET_GATED).count() == len(files)


def test_withdraw_stops_serving_and_cancels_pending_unlocks(release_v1, staff, approvers):
    version = release_v1[0]
    unlock = approved(version, staff, approvers)
    base = Artifact.objects.get(version=version, name="base")

    with pytest.raises(DomainError, match="needs a reason"):
        services.artifact_withdraw(actor=staff, artifact=base, reason="")
    services.artifact_withdraw(actor=staff, artifact=base, reason="unsafe outputs found")

    assert phase_of(version, "base") == Phase.WITHDRAWN
    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.CANCELLED
    assert "unsafe outputs found" in unlock.reason


def test_cancelled_unlock_does_not_flip(release_v1, staff, approvers):
    version = release_v1[0]
    unlock = approved(version, staff, approvers, at=datetime.now(UTC))
    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    services.unlock_cancel(unlock=unlock, actor=staff, reason="legal hold")

    unlock_advance(unlock_id=unlock.pk)

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.CANCELLED
    assert phase_of(version, "base") == Phase.PROPRIETARY


# --- the verified push itself --------------------------------------------------------------


@pytest.fixture
def small_parts(settings):
    """Multipart with 5 MiB parts (the S3 minimum), so a 12 MiB file has three."""
    settings.S3_PART_SIZE_MIB = 5


def staged_blob(body: bytes):
    import hashlib
    import uuid

    key = f"tests/{uuid.uuid4().hex}/big.bin"
    s3_client().put_object(Bucket=settings.S3_BUCKET_STAGING, Key=key, Body=body)
    return key, hashlib.sha256(body).hexdigest()


def test_multipart_push_lands_every_byte(small_parts):
    from release.publishing import blob_push

    body = os.urandom(64) + bytes(range(256)) * (12 * 4096)  # new bytes: a blob not yet stored
    key, sha256 = staged_blob(body)
    seen: list[int] = []

    result = blob_push(
        source_key=key,
        sha256=sha256,
        size=len(body),
        bucket=settings.S3_BUCKET_GATED,
        progress=seen.append,
    )

    assert not result.skipped
    stored = s3_client().get_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256))
    assert stored["Body"].read() == body
    assert seen[-1] == len(body)
    again = blob_push(
        source_key=key, sha256=sha256, size=len(body), bucket=settings.S3_BUCKET_GATED
    )
    assert again.skipped


def test_multipart_push_with_wrong_digest_leaves_nothing(small_parts):
    from release.publishing import DigestMismatch, blob_push

    body = os.urandom(64) + b"\x01" * (11 * 1024 * 1024)
    key, _ = staged_blob(body)
    claimed = "ab" * 32

    with pytest.raises(DigestMismatch):
        blob_push(source_key=key, sha256=claimed, size=len(body), bucket=settings.S3_BUCKET_GATED)

    assert not blob_present(bucket=settings.S3_BUCKET_GATED, sha256=claimed, size=len(body))
    uploads = s3_client().list_multipart_uploads(
        Bucket=settings.S3_BUCKET_GATED, Prefix=blob_key(claimed)
    )
    assert not uploads.get("Uploads")


MIB = 1024 * 1024


def digests_by_part(body: bytes, part: int) -> list[str]:
    """What S3 reports for each part: base64 SHA-256, worked out here independently."""
    return [
        base64.b64encode(hashlib.sha256(body[start : start + part]).digest()).decode()
        for start in range(0, len(body), part)
    ]


def test_ingest_records_the_digest_of_every_part_of_a_large_file(db, small_parts):
    big = os.urandom(12 * MIB + 7)
    version, _ = ingest_now(name="parts", artifacts={"base": {"big.bin": big, "small.bin": b"x"}})

    files = {f.path: f for f in version.files.all()}
    parts = FileParts.objects.get(file=files["big.bin"])
    assert parts.part_size == 5 * MIB
    assert parts.sha256 == digests_by_part(big, 5 * MIB)
    assert not FileParts.objects.filter(file=files["small.bin"]).exists()  # one PUT: no parts


@contextlib.contextmanager
def staging_reads() -> Iterator[list[str]]:
    """The keys this process GETs from the object store while the block runs."""
    keys: list[str] = []
    events = s3_client().meta.events

    def seen(params: dict[str, Any], **kwargs: Any) -> None:
        keys.append(params["Key"])

    events.register("provide-client-params.s3.GetObject", seen)
    try:
        yield keys
    finally:
        events.unregister("provide-client-params.s3.GetObject", seen)


def test_large_blob_is_copied_inside_the_store_part_by_part(small_parts):
    from release.publishing import PartDigests, blob_push

    body = os.urandom(12 * MIB + 5)
    key, sha256 = staged_blob(body)
    seen: list[int] = []

    with staging_reads() as reads:
        result = blob_push(
            source_key=key,
            sha256=sha256,
            size=len(body),
            bucket=settings.S3_BUCKET_GATED,
            parts=PartDigests(5 * MIB, digests_by_part(body, 5 * MIB)),
            progress=seen.append,
        )

    assert reads == []  # not a byte came through this process
    assert not result.skipped
    stored = s3_client().get_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256))
    assert stored["Body"].read() == body
    assert seen == [5 * MIB, 10 * MIB, len(body)]
    assert blob_present(bucket=settings.S3_BUCKET_GATED, sha256=sha256, size=len(body))


def test_a_blob_sealed_with_another_part_size_is_streamed_instead(small_parts, settings):
    from release.publishing import PartDigests, blob_push

    body = os.urandom(12 * MIB)
    key, sha256 = staged_blob(body)
    settings.S3_PART_SIZE_MIB = 6  # changed since it was sealed with 5 MiB parts

    with staging_reads() as reads:
        blob_push(
            source_key=key,
            sha256=sha256,
            size=len(body),
            bucket=settings.S3_BUCKET_GATED,
            parts=PartDigests(5 * MIB, digests_by_part(body, 5 * MIB)),
        )

    assert reads == [key]
    stored = s3_client().get_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256))
    assert stored["Body"].read() == body


def test_a_push_leaves_a_young_upload_of_the_same_blob_alone(small_parts):
    # Blobs are shared between unlocks: another worker may be pushing the same one right now.
    from release.publishing import PartDigests, blob_push

    body = os.urandom(11 * MIB)
    key, sha256 = staged_blob(body)
    other = s3_client().create_multipart_upload(
        Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256)
    )["UploadId"]
    try:
        blob_push(
            source_key=key,
            sha256=sha256,
            size=len(body),
            bucket=settings.S3_BUCKET_GATED,
            parts=PartDigests(5 * MIB, digests_by_part(body, 5 * MIB)),
        )
        listing = s3_client().list_multipart_uploads(
            Bucket=settings.S3_BUCKET_GATED, Prefix=blob_key(sha256)
        )
        assert [u["UploadId"] for u in listing.get("Uploads", [])] == [other]
    finally:
        s3_client().abort_multipart_upload(
            Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256), UploadId=other
        )


def test_a_copied_part_unlike_its_ingest_digest_stops_the_push(small_parts):
    # The whole-file sha256 is right: only the part check can refuse this, so the copy ran.
    from release.publishing import DigestMismatch, PartDigests, blob_push

    body = os.urandom(12 * MIB)
    key, sha256 = staged_blob(body)
    digests = digests_by_part(body, 5 * MIB)
    digests[1] = digests_by_part(b"other bytes", 5 * MIB)[0]

    with pytest.raises(DigestMismatch, match=f"bytes {5 * MIB}-{10 * MIB - 1} "):
        blob_push(
            source_key=key,
            sha256=sha256,
            size=len(body),
            bucket=settings.S3_BUCKET_GATED,
            parts=PartDigests(5 * MIB, digests),
        )

    assert not blob_present(bucket=settings.S3_BUCKET_GATED, sha256=sha256, size=len(body))
    uploads = s3_client().list_multipart_uploads(
        Bucket=settings.S3_BUCKET_GATED, Prefix=blob_key(sha256)
    )
    assert not uploads.get("Uploads")


def test_a_large_file_changed_in_staging_after_sealing_publishes_nothing(
    db, small_parts, staff, approvers
):
    big = os.urandom(12 * MIB)
    version, sources = ingest_now(name="changed", artifacts={"base": {"big.bin": big}})
    changed = bytearray(big)
    changed[7 * MIB] ^= 0xFF  # one byte of the middle part
    overwrite(sources["base"], "big.bin", bytes(changed))
    unlock = approved(version, staff, approvers, at=datetime.now(UTC))

    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    unlock_advance(unlock_id=unlock.pk)

    unlock.refresh_from_db()
    file = version.files.get()
    assert unlock.state == Unlock.State.FAILED
    assert "big.bin" in unlock.reason
    assert "sha256" in unlock.reason
    assert phase_of(version, "base") == Phase.PROPRIETARY
    assert not blob_present(bucket=settings.S3_BUCKET_GATED, sha256=file.sha256, size=file.size)
    uploads = s3_client().list_multipart_uploads(
        Bucket=settings.S3_BUCKET_GATED, Prefix=blob_key(file.sha256)
    )
    assert not uploads.get("Uploads")


def test_a_storage_outage_delays_the_push_and_corrupts_nothing(
    release_v1, staff, approvers, settings
):
    from botocore.exceptions import EndpointConnectionError

    from release.storage import s3_client as client_factory

    version = release_v1[0]
    unlock = approved(version, staff, approvers, at=datetime.now(UTC))
    unlock_advance(unlock_id=unlock.pk)
    row = unlock.files.first()
    assert row is not None
    real_endpoint = settings.S3_ENDPOINT_URL
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens: the store is "down"
    client_factory.cache_clear()
    try:
        with pytest.raises(EndpointConnectionError):
            unlock_push_file(unlock_file_id=row.pk)
    finally:
        settings.S3_ENDPOINT_URL = real_endpoint
        client_factory.cache_clear()

    row.refresh_from_db()
    assert row.state == UnlockFile.State.PENDING  # handed back for the task's retry
    assert "will retry" in row.error
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.STAGING

    push_all(unlock)  # the store is back
    unlock_advance(unlock_id=unlock.pk)
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE


def test_open_blobs_go_public_after_the_flip_and_back_on_withdrawal(release_v1, staff, approvers):
    import urllib.request

    from rest_framework.test import APIClient

    from release.services.unlocks import open_blobs_publish

    version = release_v1[0]
    unlock = approved(
        version, staff, approvers, at=datetime.now(UTC), target=Phase.OPEN, artifacts=("tokenizer",)
    )
    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    unlock_advance(unlock_id=unlock.pk)
    tokenizer = version.files.get(path="tokenizer.json")
    public_url = (
        f"{settings.S3_PUBLIC_BASE_URL}/{settings.S3_BUCKET_PUBLIC}/{blob_key(tokenizer.sha256)}"
    )

    open_blobs_publish(sha256=tokenizer.sha256)  # what the queued task does after the flip
    redirect = APIClient().get("/api/v1/models/acme/llm/versions/v1/files/tokenizer.json")
    served = urllib.request.urlopen(redirect["Location"]).read()
    services.artifact_withdraw(actor=staff, artifact=tokenizer.artifact, reason="bad tokenizer")
    from release.services.unlocks import open_blobs_unpublish

    open_blobs_unpublish(sha256s=[tokenizer.sha256])  # on commit, in production

    assert redirect["Location"] == public_url  # no signature needed
    assert len(served) == tokenizer.size
    assert not Blob.objects.filter(
        bucket=settings.S3_BUCKET_PUBLIC, sha256=tokenizer.sha256
    ).exists()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(public_url)


def test_nothing_goes_public_for_a_gated_unlock(release_v1, staff, approvers):
    from release.services.unlocks import open_blobs_publish

    version = release_v1[0]
    unlock = approved(
        version,
        staff,
        approvers,
        at=datetime.now(UTC),
        target=Phase.GATED,
        artifacts=("tokenizer",),
    )
    unlock_advance(unlock_id=unlock.pk)
    push_all(unlock)
    unlock_advance(unlock_id=unlock.pk)
    tokenizer = version.files.get(path="tokenizer.json")

    open_blobs_publish(sha256=tokenizer.sha256)

    assert not blob_present(
        bucket=settings.S3_BUCKET_PUBLIC, sha256=tokenizer.sha256, size=tokenizer.size
    )
