"""Reading staging objects for ingest: list a prefix, and stream one object once while hashing
it and checking its header. No database access here; `release.services` applies the results."""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from config.errors import DomainError
from release.manifests import file_path_validate
from release.publishing import PartDigests, PartHasher
from release.safetensors_check import (
    INDEX_NAME,
    InvalidWeights,
    header_length,
    header_parse,
    index_parse,
)
from release.storage import s3_client

CHUNK_BYTES = 8 * 1024 * 1024
MAX_INDEX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class StagedObject:
    artifact: str
    path: str  # inside the version
    key: str  # in the staging bucket
    size: int


@dataclass(frozen=True)
class ObjectDigest:
    size: int
    sha256: str
    details: Any  # {tensor: bytes} for safetensors, the parsed document for an index, else None
    parts: PartDigests | None = None  # for files published in several parts (release.publishing)


def staging_prefix_parse(uri: str) -> str:
    """The key prefix of an `s3://<staging bucket>/<prefix>/` URI. Only the staging bucket may
    be ingested from: the service's credentials can read the distribution buckets too."""
    parsed = urlparse(uri)
    bucket = settings.S3_BUCKET_STAGING
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DomainError(f"{uri!r} is not an s3://bucket/prefix/ URI", code="invalid_source")
    if parsed.netloc != bucket:
        raise DomainError(
            f"{uri!r}: ingest reads only from the staging bucket {bucket!r}", code="invalid_source"
        )
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


def staging_list(sources: dict[str, str]) -> tuple[list[StagedObject], list[str]]:
    """Every object under each artifact's prefix, and a list of problems (an empty prefix, an
    unsafe path, one path in two artifacts). Directory markers (keys ending in '/') are skipped."""
    paginator = s3_client().get_paginator("list_objects_v2")
    found: list[StagedObject] = []
    problems: list[str] = []
    owner: dict[str, str] = {}
    for artifact, uri in sorted(sources.items()):
        try:
            prefix = staging_prefix_parse(uri)
        except DomainError as error:
            problems.append(f"{artifact}: {error.message}")
            continue
        count = 0
        for page in paginator.paginate(Bucket=settings.S3_BUCKET_STAGING, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue
                count += 1
                path = key[len(prefix) :]
                try:
                    file_path_validate(path)
                except DomainError as error:
                    problems.append(f"{artifact}: {error.message}")
                    continue
                if path in owner:
                    problems.append(f"{artifact}: {path!r} is also in artifact {owner[path]!r}")
                    continue
                owner[path] = artifact
                found.append(StagedObject(artifact, path, key, item["Size"]))
        if count == 0:
            problems.append(f"{artifact}: no files under {uri}")
    return found, problems


def _chunks(key: str) -> Iterator[bytes]:
    body = s3_client().get_object(Bucket=settings.S3_BUCKET_STAGING, Key=key)["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def staged_object_digest(obj: StagedObject) -> ObjectDigest:
    """Stream the object once: sha256 and size of every byte, the digest of each part it will be
    published in, plus the safetensors header (the first bytes of the same stream) or the parsed
    index. Raises InvalidWeights for bad content; storage errors propagate so the task can
    retry."""
    hasher = hashlib.sha256()
    part_hasher = PartHasher(obj.size)
    size = 0
    is_shard = obj.path.endswith(".safetensors")
    is_index = obj.path.rsplit("/", 1)[-1] == INDEX_NAME
    head = bytearray()  # the header of a shard, or the whole index
    head_needed = 8 if is_shard else (MAX_INDEX_BYTES + 1 if is_index else 0)
    header_size = 0
    for chunk in _chunks(obj.key):
        hasher.update(chunk)
        part_hasher.update(chunk)
        size += len(chunk)
        offset = 0
        while len(head) < head_needed and offset < len(chunk):
            piece = chunk[offset : offset + head_needed - len(head)]
            head += piece
            offset += len(piece)
            if is_shard and header_size == 0 and len(head) >= 8:
                # Now we know how long the header is: keep reading until it is all here.
                header_size = header_length(bytes(head[:8]))
                head_needed = 8 + header_size
    if size != obj.size:
        raise InvalidWeights(f"object changed while being read ({obj.size} listed, {size} read)")
    details: Any = None
    if is_shard:
        if header_size == 0:
            header_length(bytes(head))  # raises: shorter than 8 bytes
        if len(head) < 8 + header_size:
            raise InvalidWeights(f"file ends inside its {header_size}-byte header")
        parsed = header_parse(bytes(head[8:]), header_size=header_size, file_size=size)
        details = parsed.tensor_sizes()
    elif is_index:
        if size > MAX_INDEX_BYTES:
            raise InvalidWeights(f"index larger than {MAX_INDEX_BYTES} bytes")
        details = index_parse(bytes(head))
    return ObjectDigest(
        size=size, sha256=hasher.hexdigest(), details=details, parts=part_hasher.result()
    )
