"""Re-verifying published blobs against the sealed manifests, and putting back broken ones
(`manage.py verify_blobs [--repair]`).

Publishing verified every byte on the way in; this checks that what the buckets hold today is
still that: after a restore, a storage incident, or on a schedule. Each object is read once,
streamed in bounded chunks (a shard of many GiB never sits in memory), hashed and counted. The
objects checked are the `Blob` rows: the only record that a blob was published and may be served
(`release.distribution.file_location` redirects to exactly those).
"""

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from licensing.services import audit_record
from release.models import Blob, File, Model, Phase, blob_key
from release.publishing import DigestMismatch, blob_copy, blob_delete, blob_push
from release.storage import s3_client

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 8 * 1024 * 1024
# boto3's client keeps at most 10 connections per host; more threads would only wait for one.
MAX_WORKERS = 10

ProblemKind = Literal["missing", "wrong_size", "wrong_digest", "unreadable"]


@dataclass(frozen=True)
class BlobProblem:
    bucket: str
    sha256: str
    kind: ProblemKind
    detail: str
    # Every file of the manifests checked that has this digest, as `org/name@version:path`.
    files: tuple[str, ...]

    @property
    def key(self) -> str:
        return blob_key(self.sha256)


@dataclass(frozen=True)
class BlobsReport:
    checked: int  # objects read (or found missing)
    bytes_read: int
    problems: list[BlobProblem] = field(default_factory=list)
    # (bucket, sha256) of every object that matched: sources a repair may copy from.
    good: frozenset[tuple[str, str]] = frozenset()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Expected:
    bucket: str
    sha256: str
    size: int  # from the manifest
    files: tuple[str, ...]


@dataclass(frozen=True)
class _Outcome:
    bytes_read: int
    problem: tuple[ProblemKind, str] | None = None


def _object_check(
    *, bucket: str, sha256: str, size: int, chunk_bytes: int = READ_CHUNK_BYTES
) -> _Outcome:
    """Stream `blobs/sha256/<sha256>` of `bucket` once and compare its bytes with the manifest.
    The stored `sha256` metadata tag is not trusted: only the bytes count."""
    try:
        answer = s3_client().get_object(Bucket=bucket, Key=blob_key(sha256))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchKey", "NotFound"}:
            return _Outcome(0, ("missing", "no object at its content address"))
        return _Outcome(0, ("unreadable", f"the store answered {code or error}"))
    except BotoCoreError as error:
        return _Outcome(0, ("unreadable", f"{type(error).__name__}: {error}"))
    body = answer["Body"]
    try:
        if answer["ContentLength"] != size:
            # No need to read a body that cannot match.
            return _Outcome(
                0,
                ("wrong_size", f"{answer['ContentLength']} bytes, the manifest says {size}"),
            )
        hasher = hashlib.sha256()
        done = 0
        try:
            for chunk in body.iter_chunks(chunk_bytes):
                hasher.update(chunk)
                done += len(chunk)
        except (BotoCoreError, OSError) as error:
            return _Outcome(done, ("unreadable", f"read failed after {done} bytes: {error}"))
    finally:
        body.close()
    if done != size:
        return _Outcome(done, ("wrong_size", f"{done} bytes read, the manifest says {size}"))
    if hasher.hexdigest() != sha256:
        return _Outcome(done, ("wrong_digest", f"its bytes hash to {hasher.hexdigest()}"))
    return _Outcome(done)


def _expected_blobs(model: Model | None) -> list[_Expected]:
    """Each published blob (bucket, digest) with the size the manifests give it and the files
    that have it. A blob no file of `model` has is left out when a model is given."""
    files = File.objects.filter(version__sealed_at__isnull=False)
    if model is not None:
        files = files.filter(version__model=model)
    names: dict[str, list[str]] = defaultdict(list)
    sizes: dict[str, int] = {}
    rows = files.order_by("version__model__org", "version__model__name", "version__name", "path")
    for sha256, size, org, name, version, path in rows.values_list(
        "sha256",
        "size",
        "version__model__org",
        "version__model__name",
        "version__name",
        "path",
    ).iterator(chunk_size=5000):
        names[sha256].append(f"{org}/{name}@{version}:{path}")
        sizes[sha256] = size
    blobs = Blob.objects.order_by("bucket", "sha256")
    if model is not None:
        blobs = blobs.filter(sha256__in=files.values("sha256"))
    return [
        # A blob no sealed file has any more is still checked against its own recorded size.
        _Expected(bucket, sha256, sizes.get(sha256, recorded), tuple(names.get(sha256, ())))
        for bucket, sha256, recorded in blobs.values_list("bucket", "sha256", "size").iterator()
    ]


def blobs_verify(
    *, model: Model | None = None, workers: int = 4, chunk_bytes: int = READ_CHUNK_BYTES
) -> BlobsReport:
    """Read every published blob (of `model`'s files only, when given) once, `workers` at a time,
    and report each one that is missing, of the wrong size, or whose bytes do not hash to its
    manifest digest, with the files that have it. Changes nothing."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}")
    expected = _expected_blobs(model)

    def check(blob: _Expected) -> _Outcome:
        return _object_check(
            bucket=blob.bucket, sha256=blob.sha256, size=blob.size, chunk_bytes=chunk_bytes
        )

    with ThreadPoolExecutor(workers) as pool:
        outcomes: Iterable[_Outcome] = pool.map(check, expected)
        results = list(zip(expected, outcomes, strict=True))
    problems = [
        BlobProblem(blob.bucket, blob.sha256, outcome.problem[0], outcome.problem[1], blob.files)
        for blob, outcome in results
        if outcome.problem is not None
    ]
    return BlobsReport(
        checked=len(results),
        bytes_read=sum(outcome.bytes_read for _, outcome in results),
        problems=problems,
        good=frozenset(
            (blob.bucket, blob.sha256) for blob, outcome in results if outcome.problem is None
        ),
    )


def files_served_unpublished(*, model: Model | None = None) -> int:
    """Files of gated or open artifacts with no verified blob in the gated bucket: they are
    served from their staging object (only possible when a phase was set by hand, not
    through an unlock). Counted for the report; not a fault of the blobs."""
    files = File.objects.filter(artifact__phase__in=[Phase.GATED, Phase.OPEN])
    if model is not None:
        files = files.filter(version__model=model)
    gated = Blob.objects.filter(bucket=settings.S3_BUCKET_GATED).values("sha256")
    return files.exclude(sha256__in=gated).count()


@dataclass(frozen=True)
class RepairOutcome:
    problem: BlobProblem
    repaired: bool
    detail: str  # where the bytes came from, or why nothing could put them back


def blobs_repair(*, report: BlobsReport) -> list[RepairOutcome]:
    """Put back every missing or changed blob of `report` from a copy known to be good: the same
    blob in another bucket that matched in this run (copied inside the store), else the staging
    object of a file with that digest (streamed and hashed against the manifest before it
    becomes readable, as at publishing). The bad object is deleted first, so changed bytes are
    never served again even when nothing can replace them. A repair counts only once the new
    object has been read back whole and matched; each one is written to the audit log.
    Unreadable objects (the store did not answer) are left alone: they may well be fine."""
    good = set(report.good)
    outcomes = []
    # The private bucket first: a public copy may then be made from the repaired blob.
    for problem in sorted(
        report.problems, key=lambda p: (p.bucket != settings.S3_BUCKET_GATED, p.bucket, p.sha256)
    ):
        if problem.kind == "unreadable":
            outcomes.append(RepairOutcome(problem, False, "the store did not answer; run again"))
            continue
        blob_delete(bucket=problem.bucket, sha256=problem.sha256)
        source = _blob_restore(problem, good)
        if source is None:
            outcomes.append(
                RepairOutcome(
                    problem, False, "no good copy in another bucket or in staging; it was deleted"
                )
            )
            continue
        good.add((problem.bucket, problem.sha256))
        audit_record(
            actor=None,
            action="blob.repaired",
            subject_type="blob",
            subject_id=problem.sha256,
            data={
                "bucket": problem.bucket,
                "problem": problem.kind,
                "detail": problem.detail,
                "source": source,
            },
        )
        logger.warning("blob %s/%s repaired from %s", problem.bucket, problem.key, source)
        outcomes.append(RepairOutcome(problem, True, f"put back from {source}"))
    return outcomes


def _blob_restore(problem: BlobProblem, good: set[tuple[str, str]]) -> str | None:
    """Write the blob again from the first source that yields the manifest's bytes; return that
    source's name, or None."""
    size = _manifest_size(problem)
    for bucket, sha256 in sorted(good):
        if sha256 != problem.sha256 or bucket == problem.bucket:
            continue
        try:
            blob_copy(sha256=sha256, size=size, source_bucket=bucket, target_bucket=problem.bucket)
        except (DigestMismatch, ClientError, BotoCoreError):
            continue
        if _object_check(bucket=problem.bucket, sha256=sha256, size=size).problem is None:
            return f"{bucket}/{blob_key(sha256)}"
        blob_delete(bucket=problem.bucket, sha256=sha256)
    staged = File.objects.filter(sha256=problem.sha256).values_list("storage_key", flat=True)
    for storage_key in sorted(set(staged)):
        try:
            blob_push(
                source_key=storage_key, sha256=problem.sha256, size=size, bucket=problem.bucket
            )
        except (DigestMismatch, ClientError, BotoCoreError):
            continue  # changed or gone in staging too: nothing unverified is made readable
        if _object_check(bucket=problem.bucket, sha256=problem.sha256, size=size).problem is None:
            return f"{settings.S3_BUCKET_STAGING}/{storage_key}"
        blob_delete(bucket=problem.bucket, sha256=problem.sha256)
    return None


def _manifest_size(problem: BlobProblem) -> int:
    size = File.objects.filter(sha256=problem.sha256).values_list("size", flat=True).first()
    if size is None:  # a blob no file has any more: its own record
        size = Blob.objects.get(bucket=problem.bucket, sha256=problem.sha256).size
    return size
