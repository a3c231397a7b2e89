"""Ingest: a staging prefix per artifact becomes a sealed, signed version, or a report naming
every bad file while nothing is sealed. Real SeaweedFS and PostgreSQL; the tasks' work is called
directly here, and through a real worker in test_pipeline_worker.py."""

import hashlib

import pytest
from django.core.management import CommandError, call_command

from config.errors import DomainError, NotAllowed
from release import services
from release.models import IngestFile, IngestJob, Model, Version
from release.sample_weights import sample_model_files, sample_tokenizer_files
from tests.factories import make_release
from tests.staging import stage


@pytest.fixture
def model(db):
    from licensing.keys import signing_key_ensure

    signing_key_ensure(purpose="models")
    return services.model_create(actor=None, org="acme", name="llm")


def run_ingest(model, sources, version="v1") -> IngestJob:
    """What the workers would do, in order: hash every file, then finalise."""
    job = services.ingest_start(actor=None, model=model, version_name=version, sources=sources)
    for file_id in job.files.values_list("pk", flat=True):
        services.ingest_file_hash(file_id=file_id)
    services.ingest_finalize(job_id=job.pk)
    job.refresh_from_db()
    return job


def test_ingest_of_a_sharded_model_seals_and_signs_the_version(model):
    weights, tokenizer = sample_model_files(shards=3), sample_tokenizer_files()
    sources = {"base": stage(weights), "tokenizer": stage(tokenizer)}

    job = run_ingest(model, sources)

    assert job.state == IngestJob.State.SEALED, job.error
    assert job.version is not None
    version = job.version
    assert version.is_sealed
    files = {f.path: f for f in version.files.select_related("artifact")}
    assert set(files) == set(weights) | set(tokenizer)
    for path, body in {**weights, **tokenizer}.items():
        assert files[path].sha256 == hashlib.sha256(body).hexdigest()
        assert files[path].size == len(body)
    assert files["tokenizer.json"].artifact.name == "tokenizer"
    assert version.signature is not None
    assert version.signature["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert all(a.signature for a in version.artifacts.all())


def test_ingest_reads_nested_folders_as_paths(model):
    files = {f"sub/{p}": b for p, b in sample_model_files().items()}

    job = run_ingest(model, {"base": stage(files)})

    assert job.state == IngestJob.State.SEALED, job.error
    assert job.version is not None
    assert "sub/model.safetensors.index.json" in set(
        job.version.files.values_list("path", flat=True)
    )


def test_ingest_command_reports_a_refusal(model):
    with pytest.raises(CommandError, match="no files under"):
        call_command(
            "ingest",
            "--model",
            "acme/llm",
            "--version",
            "v1",
            "--artifact",
            "base=s3://weightgate-staging/tests/nothing-here/",
        )


def test_ingest_command_does_not_create_a_model_when_refused(db):
    with pytest.raises(CommandError):
        call_command(
            "ingest",
            "--model",
            "acme/brand-new",
            "--version",
            "v1",
            "--artifact",
            "base=s3://weightgate-staging/tests/nothing-here/",
        )

    assert not Model.objects.filter(name="brand-new").exists()


def truncated(files):
    name = "model-00001-of-00002.safetensors"
    return {**files, name: files[name][:-10]}


# Each kind of malformed weights, lying index and hostile staging key, through a whole ingest:
# tests/release/test_hostile_weights.py.


def test_every_bad_file_is_reported_not_just_the_first(model):
    files = sample_model_files()
    files = {
        **files,
        **{name: body[:-1] for name, body in files.items() if name.endswith(".safetensors")},
    }

    job = run_ingest(model, {"base": stage(files)})

    assert job.error.count("truncated") == 2


def test_a_failed_ingest_may_be_retried_under_the_same_version_name(model):
    assert run_ingest(model, {"base": stage(truncated(sample_model_files()))}).state == "failed"

    retry = run_ingest(model, {"base": stage(sample_model_files())})

    assert retry.state == IngestJob.State.SEALED, retry.error


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"base": "s3://weightgate-staging/tests/empty-prefix/"}, "no files under"),
        ({"base": "s3://weightgate-gated/blobs/"}, "only from the staging bucket"),
        ({"base": "https://example.com/x"}, "is not an s3://bucket/prefix/ URI"),
        ({}, "at least one artifact"),
        ({"bad name": "s3://weightgate-staging/x/"}, "artifact name"),
    ],
    ids=["empty-prefix", "other-bucket", "not-s3", "no-artifacts", "bad-artifact-name"],
)
def test_bad_sources_are_refused_before_anything_is_created(model, sources, message):
    with pytest.raises(DomainError, match=message):
        services.ingest_start(actor=None, model=model, version_name="v1", sources=sources)

    assert not IngestJob.objects.exists()


def test_one_path_in_two_artifacts_is_refused(model):
    shared = {"config.json": b"{}"}

    with pytest.raises(DomainError, match="'config.json' is also in artifact 'a'"):
        services.ingest_start(
            actor=None,
            model=model,
            version_name="v1",
            sources={"a": stage(shared), "b": stage(shared)},
        )


def test_existing_version_name_is_refused(model):
    make_release(org="acme", name="llm", version="v1")

    with pytest.raises(NotAllowed, match="already has a version 'v1'"):
        services.ingest_start(
            actor=None, model=model, version_name="v1", sources={"base": stage({"a.bin": b"a"})}
        )


def test_two_live_ingests_of_one_version_are_refused(model):
    uri = stage({"a.bin": b"a"})
    services.ingest_start(actor=None, model=model, version_name="v1", sources={"base": uri})

    with pytest.raises(NotAllowed, match="already running"):
        services.ingest_start(actor=None, model=model, version_name="v1", sources={"base": uri})


def test_hashing_twice_is_harmless(model):
    job = services.ingest_start(
        actor=None, model=model, version_name="v1", sources={"base": stage({"a.bin": b"abc"})}
    )
    file_id = job.files.get().pk

    services.ingest_file_hash(file_id=file_id)
    services.ingest_file_hash(file_id=file_id)  # a redelivered task finds the work done
    services.ingest_finalize(job_id=job.pk)
    services.ingest_finalize(job_id=job.pk)

    job.refresh_from_db()
    assert job.state == IngestJob.State.SEALED
    assert IngestFile.objects.get(pk=file_id).sha256 == hashlib.sha256(b"abc").hexdigest()
    assert Version.objects.filter(model=model).count() == 1


def test_a_retry_takes_back_its_own_claim_but_not_another_workers(model):
    # Given a file claimed by task "first", whose attempt then met a database outage...
    from django.utils import timezone

    job = services.ingest_start(
        actor=None, model=model, version_name="v1", sources={"base": stage({"a.bin": b"abc"})}
    )
    file_id = job.files.get().pk
    IngestFile.objects.filter(pk=file_id).update(
        state=IngestFile.State.RUNNING, claimed_at=timezone.now(), claimed_by="first"
    )

    # ...another task leaves it alone while the claim is fresh,
    services.ingest_file_hash(file_id=file_id, claim="second")
    assert IngestFile.objects.get(pk=file_id).state == IngestFile.State.RUNNING

    # and the retry of "first" (same task id) takes it back at once and finishes it.
    services.ingest_file_hash(file_id=file_id, claim="first")
    row = IngestFile.objects.get(pk=file_id)
    assert row.state == IngestFile.State.DONE
    assert row.sha256 == hashlib.sha256(b"abc").hexdigest()
