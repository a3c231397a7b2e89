"""Pushing a staged file to a distribution bucket as a content-addressed blob, verified.

Each byte is read once from staging. The whole-file sha256 is computed while reading and must
match the manifest before the object becomes visible: small files are buffered and PUT only once
they match; large ones go up as a multipart upload that is completed only on a match and aborted
otherwise (an incomplete multipart upload is never readable). Every PUT and part also carries its
own SHA-256 checksum, which the object store verifies on receipt: what landed is what we hashed.
No database access here; `release.services` records the outcome.
"""

import base64
import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from django.conf import settings

from release.models import blob_key
from release.storage import s3_client

PART_BYTES = 64 * 1024 * 1024
SINGLE_PUT_MAX = PART_BYTES
PARALLEL_PARTS = 4


class DigestMismatch(Exception):
    """The bytes in staging are not the bytes that were sealed: nothing was published."""


@dataclass(frozen=True)
class PushResult:
    skipped: bool  # already present, verified by an earlier push


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def blob_present(*, bucket: str, sha256: str, size: int) -> bool:
    """A blob at its content address with the right size and the digest we tagged it with. Only
    this service writes there, and only after verification, so that is proof enough."""
    try:
        head = s3_client().head_object(Bucket=bucket, Key=blob_key(sha256))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return head["ContentLength"] == size and head.get("Metadata", {}).get("sha256") == sha256


def blob_push(
    *,
    source_key: str,
    sha256: str,
    size: int,
    bucket: str,
    progress: Callable[[int], None] = lambda done: None,
) -> PushResult:
    """Copy staging `source_key` to `bucket` at `blobs/sha256/<sha256>`, verifying as it goes."""
    if blob_present(bucket=bucket, sha256=sha256, size=size):
        progress(size)
        return PushResult(skipped=True)
    client = s3_client()
    key = blob_key(sha256)
    body = client.get_object(Bucket=settings.S3_BUCKET_STAGING, Key=source_key)["Body"]
    try:
        if size <= SINGLE_PUT_MAX:
            data = body.read()
            _check(hashlib.sha256(data).hexdigest(), len(data), sha256, size)
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                Metadata={"sha256": sha256},
                ChecksumSHA256=_b64_sha256(data),
            )
            progress(size)
        else:
            _multipart_push(
                body, key=key, bucket=bucket, sha256=sha256, size=size, progress=progress
            )
    finally:
        body.close()
    return PushResult(skipped=False)


def _check(actual_sha256: str, actual_size: int, sha256: str, size: int) -> None:
    if actual_size != size:
        raise DigestMismatch(f"staging object is {actual_size} bytes, the manifest says {size}")
    if actual_sha256 != sha256:
        raise DigestMismatch(
            f"staging object has sha256 {actual_sha256}, the manifest says {sha256}"
        )


def _abort_abandoned_uploads(*, bucket: str, key: str) -> None:
    """Uploads of this key left by a worker that died mid-push: never readable, but they hold
    storage. The caller owns the push now (it holds the lease), so none of them can be live."""
    client = s3_client()
    listing = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in listing.get("Uploads", []):
        if upload.get("Key") == key and upload.get("UploadId"):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def _multipart_push(
    body: StreamingBody,
    *,
    key: str,
    bucket: str,
    sha256: str,
    size: int,
    progress: Callable[[int], None],
) -> None:
    client = s3_client()
    _abort_abandoned_uploads(bucket=bucket, key=key)
    upload = client.create_multipart_upload(
        Bucket=bucket, Key=key, Metadata={"sha256": sha256}, ChecksumAlgorithm="SHA256"
    )
    upload_id = upload["UploadId"]
    hasher = hashlib.sha256()
    done = 0

    def send(number: int, data: bytes) -> dict[str, str | int]:
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=_b64_sha256(data),
        )
        return {
            "PartNumber": number,
            "ETag": answer["ETag"],
            "ChecksumSHA256": answer.get("ChecksumSHA256", _b64_sha256(data)),
        }

    try:
        futures: list[Future[dict[str, str | int]]] = []
        with ThreadPoolExecutor(PARALLEL_PARTS) as pool:
            number = 0
            while data := body.read(PART_BYTES):
                number += 1
                hasher.update(data)
                # Bound memory: wait for the oldest part once PARALLEL_PARTS are in flight.
                while sum(not f.done() for f in futures) >= PARALLEL_PARTS:
                    next(f for f in futures if not f.done()).result()
                futures.append(pool.submit(send, number, data))
                done += len(data)
                progress(done)
            parts = [future.result() for future in futures]
        _check(hasher.hexdigest(), done, sha256, size)
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def blob_copy(*, sha256: str, size: int, source_bucket: str, target_bucket: str) -> None:
    """Copy a verified blob between buckets inside the store (multipart for large ones), then
    check the copy's size and digest tag before anyone is told it is there."""
    if blob_present(bucket=target_bucket, sha256=sha256, size=size):
        return
    key = blob_key(sha256)
    s3_client().copy(
        {"Bucket": source_bucket, "Key": key},
        target_bucket,
        key,
        ExtraArgs={"MetadataDirective": "COPY"},
    )
    if not blob_present(bucket=target_bucket, sha256=sha256, size=size):
        s3_client().delete_object(Bucket=target_bucket, Key=key)
        raise DigestMismatch(f"copy of {key} into {target_bucket} does not match its source")


def blob_delete(*, bucket: str, sha256: str) -> None:
    s3_client().delete_object(Bucket=bucket, Key=blob_key(sha256))
