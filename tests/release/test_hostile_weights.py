"""A corpus of malformed weights, lying indexes and hostile staging keys, each run through a real
ingest (SeaweedFS staging, the hashing and finalising services): every one is refused with a
message naming the file and the problem, and nothing is sealed — no version, so no manifest and
no signature. The parser's own edge cases, one by one, are in test_safetensors_check.py.

"Symlinks" in S3 staging: an object store has no links, so what could act like one was tried
instead: keys with `.`/`..`/empty segments (SeaweedFS refuses them at upload and folds `//` and
`\\`; AWS S3 and MinIO keep them, so the path check must and does refuse them), keys that mean
another path once percent-decoded (`%2e%2e/`), zero-byte "directory markers" (`dir/`, skipped),
and an object carrying `x-amz-website-redirect-location` (only an S3 *website* endpoint follows
it; ingest and publishing read and write through the REST API and never copy staging metadata).
"""

import hashlib
import json
import re
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from config.errors import DomainError
from licensing.keys import signing_key_ensure
from release import services
from release.file_paths import file_path_problem
from release.models import Artifact, IngestJob, Version, blob_key
from release.publishing import blob_push
from release.safetensors_check import INDEX_NAME, MAX_HEADER_BYTES
from release.sample_weights import sample_model_files
from release.storage import s3_client
from tests.staging import stage

pytestmark = pytest.mark.django_db

S1 = "model-00001-of-00002.safetensors"
S2 = "model-00002-of-00002.safetensors"
Files = dict[str, bytes]


@pytest.fixture
def model():
    signing_key_ensure(purpose="models")
    return services.model_create(actor=None, org="acme", name="llm")


def sample() -> Files:
    return sample_model_files(layers=2, hidden=8, shards=2)


def build(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: header length (8 bytes, little-endian), header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def u8(begin: int, end: int) -> dict[str, Any]:
    return {"dtype": "U8", "shape": [end - begin], "data_offsets": [begin, end]}


def shard(file: bytes) -> Callable[[Files], Files]:
    """Replace the first shard with `file`."""
    return lambda files: {**files, S1: file}


def index(change: Callable[[dict[str, Any]], Any]) -> Callable[[Files], Files]:
    """Edit the parsed index with `change` (which may return a replacement document)."""

    def mangle(files: Files) -> Files:
        document = json.loads(files[INDEX_NAME])
        document = change(document) or document
        return {**files, INDEX_NAME: json.dumps(document).encode()}

    return mangle


def first_tensor_to(shard_name: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        tensor = next(t for t, s in document["weight_map"].items() if s == S2)
        document["weight_map"][tensor] = shard_name

    return change


def header_of(file: bytes) -> bytes:
    return file[8 : 8 + struct.unpack("<Q", file[:8])[0]]


CORPUS = [
    # --- the safetensors file itself ---
    pytest.param(lambda f: {**f, S1: f[S1][:-10]}, S1, r"\(truncated\?\)", id="truncated-file"),
    pytest.param(
        lambda f: {**f, S1: f[S1][: 8 + len(header_of(f[S1])) // 2]},
        S1,
        r"file ends inside its \d+-byte header",
        id="truncated-header",
    ),
    pytest.param(shard(b""), S1, "shorter than the 8-byte header length", id="empty-file"),
    pytest.param(shard(b"\x10\x00\x00"), S1, "shorter than the 8-byte", id="3-byte-file"),
    pytest.param(
        shard(build({"a": u8(0, 8), "b": u8(4, 12)}, bytes(12))),
        S1,
        r"tensor 'b' at offset 4 overlaps the tensor before it \(expected 8\)",
        id="offsets-overlap",
    ),
    pytest.param(
        shard(build({"a": u8(0, 4), "b": u8(8, 12)}, bytes(12))),
        S1,
        r"tensor 'b' at offset 8 leaves a gap \(expected 4\)",
        id="offsets-gap",
    ),
    pytest.param(
        shard(build({"a": u8(0, 4), "b": u8(4, 1 << 40)}, bytes(8))),
        S1,
        r"tensors cover 1099511627776 data bytes but the file holds 8 \(truncated\?\)",
        id="offsets-a-terabyte-out-of-bounds",
    ),
    pytest.param(
        shard(build({"a": u8(0, 4), "b": u8(4, 64)}, bytes(8))),
        S1,
        r"tensors cover 64 data bytes but the file holds 8 \(truncated\?\)",
        id="offsets-out-of-bounds",
    ),
    pytest.param(
        shard(build(b"{}", length=2**63)),
        S1,
        f"header length {2**63} exceeds the {MAX_HEADER_BYTES}-byte cap",
        id="header-length-2^63",
    ),
    pytest.param(
        shard(build(b"{}", length=MAX_HEADER_BYTES + 1)),
        S1,
        f"header length {MAX_HEADER_BYTES + 1} exceeds the {MAX_HEADER_BYTES}-byte cap",
        id="header-length-cap-plus-one",
    ),
    pytest.param(
        shard(build(b"{not json at all}")), S1, "header is not valid JSON", id="header-not-json"
    ),
    pytest.param(
        shard(build(b'{"caf\xe9": {}}')),
        S1,
        r"header is not valid UTF-8 \(byte 5\)",
        id="header-bad-utf-8",
    ),
    pytest.param(
        shard(build(b'{"a": ' + json.dumps(u8(0, 4)).encode() + b', "a": {}}', bytes(4))),
        S1,
        "duplicate key 'a' in JSON",
        id="duplicate-keys",
    ),
    pytest.param(
        shard(build({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16))),
        S1,
        "tensor 'a' has unknown dtype 'F128'",
        id="unknown-dtype",
    ),
    pytest.param(
        shard(build({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4))),
        S1,
        r"tensor 'a' spans 4 bytes but shape \[2\] of F32 needs 8",
        id="shape-times-dtype-is-not-the-size",
    ),
    pytest.param(
        shard(build({"__metadata__": {"format": 1}, "a": u8(0, 2)}, bytes(2))),
        S1,
        "__metadata__ must map strings to strings",
        id="metadata-not-strings",
    ),
    pytest.param(
        shard(build({"__metadata__": ["format", "pt"]})),
        S1,
        "__metadata__ must map strings to strings",
        id="metadata-a-list",
    ),
    pytest.param(
        shard(build(b'{"a\\u0000b": ' + json.dumps(u8(0, 1)).encode() + b"}", b"x")),
        S1,
        r"header contains a NUL character",
        id="nul-in-a-tensor-name",
    ),
    # --- model.safetensors.index.json ---
    pytest.param(
        index(first_tensor_to("model-00003-of-00002.safetensors")),
        INDEX_NAME,
        "which is not a shard of the version",
        id="index-names-a-missing-shard",
    ),
    pytest.param(index(first_tensor_to(S1)), INDEX_NAME, "which does not hold it", id="index-lies"),
    pytest.param(
        index(first_tensor_to("../" + S2)), INDEX_NAME, "names an unsafe path", id="index-dotdot"
    ),
    pytest.param(
        index(first_tensor_to("/" + S2)), INDEX_NAME, "names an unsafe path", id="index-absolute"
    ),
    pytest.param(
        index(first_tensor_to("sub\\" + S2)),
        INDEX_NAME,
        "names an unsafe path",
        id="index-backslash",
    ),
    pytest.param(
        index(first_tensor_to(S2 + "\u0000")),
        INDEX_NAME,
        "contains a NUL character",
        id="index-nul-in-a-shard-name",
    ),
    pytest.param(
        index(first_tensor_to("%2e%2e/" + S2)),
        INDEX_NAME,
        "which is not a shard of the version",
        id="index-percent-encoded-dotdot",
    ),
    pytest.param(
        index(lambda d: d["metadata"].update(total_size=d["metadata"]["total_size"] + 1)),
        INDEX_NAME,
        "does not match the shards'",
        id="index-total-size-lies",
    ),
    pytest.param(
        index(lambda d: {"weight_map": {}}), INDEX_NAME, "weight_map is empty", id="index-empty"
    ),
    pytest.param(
        lambda f: {**f, INDEX_NAME: b'{"weight_map": '},
        INDEX_NAME,
        "is not valid JSON",
        id="index-not-json",
    ),
]


@pytest.mark.parametrize(("mangle", "bad_path", "message"), CORPUS)
def test_malformed_weights_are_refused_and_nothing_is_sealed(model, mangle, bad_path, message):
    job = services.ingest_start(
        actor=None, model=model, version_name="v1", sources={"base": stage(mangle(sample()))}
    )
    for file_id in job.files.values_list("pk", flat=True):
        services.ingest_file_hash(file_id=file_id)
    services.ingest_finalize(job_id=job.pk)
    job.refresh_from_db()

    assert job.state == IngestJob.State.FAILED
    [problem] = [line for line in job.error.splitlines() if line.startswith(f"{bad_path}: ")]
    assert re.search(message, problem), job.error
    assert job.version is None
    assert not Version.objects.filter(model=model).exists()  # no manifest, no signature
    assert not Artifact.objects.filter(version__model=model).exists()


# --- hostile staging keys: the listing refuses the whole ingest, nothing is created --------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("bad\nname.bin", "must not contain control characters", id="newline"),
        pytest.param("tab\t.bin", "must not contain control characters", id="tab"),
        pytest.param("c1\x85control.bin", "must not contain control characters", id="c1-control"),
        pytest.param("bell\x07.bin", "must not contain control characters", id="bell"),
        pytest.param(
            "model\u202esrosnetefas.bin", "invisible formatting characters", id="rtl-override"
        ),
        pytest.param("zero\u200bwidth.json", "invisible formatting characters", id="zero-width"),
        pytest.param("%2e%2e/escape.bin", "percent-encoded", id="percent-encoded-dotdot"),
        pytest.param("a%2f..%2fb.bin", "percent-encoded", id="percent-encoded-slash"),
        pytest.param(".git/config", "must not be inside .git", id="dot-git"),
    ],
)
def test_hostile_staging_keys_refuse_the_ingest(model, key, message):
    uri = stage({"config.json": b"{}", key: b"x"})

    with pytest.raises(DomainError, match="ingest refused") as refused:
        services.ingest_start(actor=None, model=model, version_name="v1", sources={"base": uri})

    assert message in refused.value.message
    assert repr(key) in refused.value.message  # the key is named, escaped
    assert not IngestJob.objects.exists()


@pytest.mark.parametrize(
    "path",
    ["a/../b.bin", "./c.bin", "d/./e.bin", "..", "n/..", "x/../../escape.bin", "f//g.bin"],
)
def test_dot_segments_are_refused_though_this_store_refuses_them_first(path):
    # SeaweedFS answers InvalidRequest to these keys (and folds `//`), so they cannot be staged
    # here; AWS S3 and MinIO store them literally, and the listing check is what refuses them.
    assert file_path_problem(path) == "must not contain empty, '.' or '..' segments"


def test_directory_markers_are_skipped_not_ingested(model):
    prefix = f"tests/{uuid.uuid4().hex}/"
    files = {**sample(), "empty-dir/": b"", "sub/marker/": b""}
    uri = stage(files, prefix=prefix)

    job = services.ingest_start(actor=None, model=model, version_name="v1", sources={"b": uri})

    assert set(job.files.values_list("path", flat=True)) == set(sample())
    only_markers = stage({"dir/": b"", "dir/sub/": b""})
    with pytest.raises(DomainError, match="no files under"):
        services.ingest_start(
            actor=None, model=model, version_name="v2", sources={"b": only_markers}
        )


def test_a_website_redirect_on_a_staged_object_is_never_followed_nor_copied(model):
    body = b'{"the": "object\'s own bytes"}'
    prefix = f"tests/{uuid.uuid4().hex}/"
    s3_client().put_object(
        Bucket=settings.S3_BUCKET_STAGING,
        Key=prefix + "config.json",
        Body=body,
        WebsiteRedirectLocation="https://evil.example/config.json",
    )
    uri = f"s3://{settings.S3_BUCKET_STAGING}/{prefix}"
    job = services.ingest_start(actor=None, model=model, version_name="v1", sources={"b": uri})
    services.ingest_file_hash(file_id=job.files.get().pk)
    services.ingest_finalize(job_id=job.pk)
    job.refresh_from_db()
    sha256 = hashlib.sha256(body).hexdigest()

    blob_push(
        source_key=prefix + "config.json",
        sha256=sha256,
        size=len(body),
        bucket=settings.S3_BUCKET_GATED,
    )

    assert job.state == IngestJob.State.SEALED, job.error
    assert job.version is not None
    assert job.version.files.get().sha256 == sha256  # the object's bytes, not a redirect's
    head = s3_client().head_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(sha256))
    assert "WebsiteRedirectLocation" not in head
    assert head["Metadata"] == {"sha256": sha256}
