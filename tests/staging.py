"""Putting files in the real staging bucket, under a prefix no other test uses."""

import uuid

from django.conf import settings

from release.storage import s3_client


def stage(files: dict[str, bytes], *, prefix: str | None = None) -> str:
    """Upload `files` ({relative path: bytes}) and return their s3:// URI."""
    prefix = prefix or f"tests/{uuid.uuid4().hex}/"
    client = s3_client()
    for path, body in files.items():
        client.put_object(Bucket=settings.S3_BUCKET_STAGING, Key=prefix + path, Body=body)
    return f"s3://{settings.S3_BUCKET_STAGING}/{prefix}"


def overwrite(uri: str, path: str, body: bytes) -> None:
    """Replace one staged file, as a training job (or an attacker) might after sealing."""
    prefix = uri.split("/", 3)[3]
    s3_client().put_object(Bucket=settings.S3_BUCKET_STAGING, Key=prefix + path, Body=body)


def ingest_now(
    *,
    org: str = "acme",
    name: str = "llm",
    version: str = "v1",
    artifacts: dict[str, dict[str, bytes]],
):
    """Stage files per artifact and ingest them synchronously (what the workers would do):
    a sealed version whose files really are in staging."""
    from licensing.keys import signing_key_ensure
    from release import services
    from release.models import IngestJob, Model

    signing_key_ensure(purpose="models")
    model = Model.objects.filter(org=org, name=name).first() or services.model_create(
        actor=None, org=org, name=name
    )
    sources = {artifact: stage(files) for artifact, files in artifacts.items()}
    job = services.ingest_start(actor=None, model=model, version_name=version, sources=sources)
    for file_id in job.files.values_list("pk", flat=True):
        services.ingest_file_hash(file_id=file_id)
    job = services.ingest_finalize(job_id=job.pk)
    assert job.state == IngestJob.State.SEALED, job.error
    return job.version, sources
