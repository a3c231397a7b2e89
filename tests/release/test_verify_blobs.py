"""`manage.py verify_blobs`: every published blob re-read from the real SeaweedFS and compared
with its manifest; a tampered, truncated or deleted object is named with its files, and
`--repair` puts it back from a good copy, never from bytes that do not match."""

import itertools
import random
from datetime import UTC, datetime
from io import StringIO

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.management import CommandError, call_command

from licensing.models import AuditEvent
from release import services
from release.integrity import blobs_verify
from release.models import Blob, Phase, blob_key
from release.sample_weights import sample_model_files
from release.services.unlocks import open_blobs_publish, unlock_advance, unlock_push_file
from release.storage import s3_client
from tests.factories import make_release, make_user
from tests.staging import ingest_now

# Blobs are content-addressed and the buckets outlive each test: every test makes bytes of its own.
SEEDS = itertools.count(random.randrange(1 << 30))


def publish(version, staff, approvers, *, target, artifacts):
    """Schedule, approve, push and flip an unlock for now, as the workers would."""
    unlock = services.unlock_schedule(
        actor=staff,
        version=version,
        artifacts=list(artifacts),
        target_phase=target,
        not_before=datetime.now(UTC),
    )
    for person in approvers:
        services.unlock_approve(unlock=unlock, approver=person)
    unlock_advance(unlock_id=unlock.pk)
    for row_id in unlock.files.values_list("pk", flat=True):
        unlock_push_file(unlock_file_id=row_id)
    unlock_advance(unlock_id=unlock.pk)
    return unlock


@pytest.fixture
def published(db, staff):
    """acme/llm v1: `base` gated (blobs in the gated bucket), `config` open (gated blob plus its
    public copy)."""
    approvers = (make_user("alice", is_staff=True), make_user("bob", is_staff=True))
    files = sample_model_files(seed=next(SEEDS))
    config = {"config.json": files.pop("config.json")}
    version, _ = ingest_now(artifacts={"base": files, "config": config})
    publish(version, staff, approvers, target=Phase.GATED, artifacts=["base"])
    publish(version, staff, approvers, target=Phase.OPEN, artifacts=["config"])
    config_file = version.files.get(path="config.json")
    open_blobs_publish(sha256=config_file.sha256)  # the task queued after an open flip
    assert Blob.objects.filter(bucket=settings.S3_BUCKET_PUBLIC).count() == 1
    return version


@pytest.fixture
def tampered():
    """Objects a test overwrote or deleted: removed afterwards, so no other run meets them."""
    keys: list[tuple[str, str]] = []
    yield keys
    for bucket, key in keys:
        s3_client().delete_object(Bucket=bucket, Key=key)


def run(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_blobs", *args, stdout=out, stderr=err)
    except CommandError as error:
        return error, out.getvalue(), err.getvalue()
    return None, out.getvalue(), err.getvalue()


def overwrite(tampered, bucket, sha256, body):
    tampered.append((bucket, blob_key(sha256)))
    s3_client().put_object(Bucket=bucket, Key=blob_key(sha256), Body=body)


def flipped_bit(file, position):
    """The published bytes of `file` with one bit changed: same size, another digest."""
    body = s3_client().get_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(file.sha256))
    forged = bytearray(body["Body"].read())
    forged[position] ^= 0x01
    return bytes(forged)


def test_every_published_blob_matches(published):
    files = published.files.count()  # 4 in the gated bucket, one of them also public

    error, out, err = run()

    assert error is None
    assert f"{files + 1} published blobs verified" in out
    assert err == ""


def test_a_blob_overwritten_with_other_bytes_of_the_same_size_is_named(published, tampered):
    shard = published.files.get(path="model-00001-of-00002.safetensors")
    overwrite(tampered, settings.S3_BUCKET_GATED, shard.sha256, flipped_bit(shard, -1))

    error, out, err = run()

    assert error is not None
    assert "1 of 5 published blobs do not match their manifest" in str(error)
    assert "WRONG_DIGEST" in err
    assert f"acme/llm@v1:{shard.path}" in err
    assert "verified" not in out


def test_a_truncated_blob_is_reported_as_the_wrong_size(published, tampered):
    index = published.files.get(path="model.safetensors.index.json")
    overwrite(tampered, settings.S3_BUCKET_GATED, index.sha256, b"{}")

    error, _, err = run()

    assert error is not None
    assert "WRONG_SIZE" in err
    assert f"2 bytes, the manifest says {index.size}" in err
    assert f"acme/llm@v1:{index.path}" in err


def test_a_deleted_blob_is_reported_missing_in_its_bucket(published, tampered):
    config = published.files.get(path="config.json")
    tampered.append((settings.S3_BUCKET_PUBLIC, blob_key(config.sha256)))
    s3_client().delete_object(Bucket=settings.S3_BUCKET_PUBLIC, Key=blob_key(config.sha256))

    error, _, err = run("--workers", "2")

    assert error is not None
    assert "1 of 5" in str(error)
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("MISSING")
    assert f"{settings.S3_BUCKET_PUBLIC}/{blob_key(config.sha256)}" in lines[0]
    assert "acme/llm@v1:config.json" in lines[0]


def test_each_object_is_streamed_in_chunks_and_checked_whole(published, tampered):
    # Chunks far smaller than any file: the digest must still cover every byte.
    config = published.files.get(path="config.json")
    report = blobs_verify(workers=3, chunk_bytes=1000)
    assert report.ok
    assert report.bytes_read == sum(f.size for f in published.files.all()) + config.size

    shard = published.files.get(path="model-00002-of-00002.safetensors")
    # One bit in the middle: in neither the first nor the last chunk.
    overwrite(tampered, settings.S3_BUCKET_GATED, shard.sha256, flipped_bit(shard, shard.size // 2))

    report = blobs_verify(workers=3, chunk_bytes=1000)

    assert [(p.kind, p.sha256, p.files) for p in report.problems] == [
        ("wrong_digest", shard.sha256, (f"acme/llm@v1:{shard.path}",))
    ]


def test_model_option_checks_only_that_models_blobs(published, tampered, staff):
    other = make_release(org="other", name="model", artifacts={"base": Phase.PROPRIETARY})
    broken = other.files.order_by("path")[0]
    # A published blob of the other model that is not in the store at all.
    Blob.objects.create(
        bucket=settings.S3_BUCKET_GATED,
        sha256=broken.sha256,
        size=broken.size,
        verified_at=datetime.now(UTC),
    )

    good, out, _ = run("--model", "acme/llm")
    bad, _, err = run("--model", "other/model")

    assert good is None
    assert "5 published blobs verified" in out
    assert bad is not None
    assert "1 of 1" in str(bad)
    assert "MISSING" in err
    assert f"other/model@v1:{broken.path}" in err


def test_refuses_an_unknown_model_and_a_bad_worker_count(db):
    unknown, _, _ = run("--model", "nobody/nothing")
    assert unknown is not None
    assert "no model nobody/nothing" in str(unknown)
    for workers in ("0", "11", "many"):
        with pytest.raises(CommandError, match="workers"):
            call_command("verify_blobs", "--workers", workers)


def test_files_gated_without_an_unlock_are_noted_but_not_a_failure(db):
    make_release(artifacts={"base": Phase.GATED})

    error, out, _ = run()

    assert error is None
    assert "0 published blobs verified" in out
    assert "2 file(s) of gated or open artifacts have no published blob" in out


# --- --repair -------------------------------------------------------------------------------


def stored(bucket, sha256):
    return s3_client().get_object(Bucket=bucket, Key=blob_key(sha256))["Body"].read()


def test_repair_puts_a_changed_blob_back_from_staging(published, tampered):
    shard = published.files.get(path="model-00001-of-00002.safetensors")
    original = stored(settings.S3_BUCKET_GATED, shard.sha256)
    overwrite(tampered, settings.S3_BUCKET_GATED, shard.sha256, flipped_bit(shard, 100))

    error, out, err = run("--repair")

    assert error is None, str(error)
    assert "WRONG_DIGEST" in err
    assert f"REPAIRED     {settings.S3_BUCKET_GATED}/{blob_key(shard.sha256)}" in out
    assert f"from {settings.S3_BUCKET_STAGING}/{shard.storage_key}" in out
    assert stored(settings.S3_BUCKET_GATED, shard.sha256) == original
    assert run()[0] is None  # verifies clean afterwards
    event = AuditEvent.objects.get(action="blob.repaired")
    assert (event.subject_type, event.subject_id) == ("blob", shard.sha256)
    assert event.data["bucket"] == settings.S3_BUCKET_GATED
    assert event.data["problem"] == "wrong_digest"


def test_repair_copies_a_lost_public_copy_from_the_gated_bucket(published, tampered):
    config = published.files.get(path="config.json")
    tampered.append((settings.S3_BUCKET_PUBLIC, blob_key(config.sha256)))
    s3_client().delete_object(Bucket=settings.S3_BUCKET_PUBLIC, Key=blob_key(config.sha256))

    error, out, _ = run("--repair")

    assert error is None, str(error)
    assert f"from {settings.S3_BUCKET_GATED}/{blob_key(config.sha256)}" in out
    assert stored(settings.S3_BUCKET_PUBLIC, config.sha256) == stored(
        settings.S3_BUCKET_GATED, config.sha256
    )


def test_repair_uses_the_public_copy_when_staging_is_gone_too(published, tampered):
    config = published.files.get(path="config.json")
    s3_client().delete_object(Bucket=settings.S3_BUCKET_STAGING, Key=config.storage_key)
    tampered.append((settings.S3_BUCKET_GATED, blob_key(config.sha256)))
    s3_client().delete_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(config.sha256))

    error, out, _ = run("--repair")

    assert error is None, str(error)
    assert f"from {settings.S3_BUCKET_PUBLIC}/{blob_key(config.sha256)}" in out
    assert run()[0] is None


def test_repair_never_republishes_bytes_that_do_not_match(published, tampered):
    """Staging changed as well and no other copy: the bad blob is taken down, not replaced."""
    shard = published.files.get(path="model-00002-of-00002.safetensors")
    forged = flipped_bit(shard, 7)
    s3_client().put_object(Bucket=settings.S3_BUCKET_STAGING, Key=shard.storage_key, Body=forged)
    overwrite(tampered, settings.S3_BUCKET_GATED, shard.sha256, forged)

    error, out, _ = run("--repair")

    assert error is not None
    assert "1 of 1 broken blobs could not be repaired" in str(error)
    assert f"NOT REPAIRED {settings.S3_BUCKET_GATED}/{blob_key(shard.sha256)}" in out
    with pytest.raises(ClientError):
        stored(settings.S3_BUCKET_GATED, shard.sha256)
    assert not AuditEvent.objects.filter(action="blob.repaired").exists()
