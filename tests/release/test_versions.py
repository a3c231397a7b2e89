"""Versions: created open, sealed once into an immutable manifest with a derived commit id."""

import hashlib

import pytest
from django.db import IntegrityError

from config.errors import DomainError, NotAllowed
from licensing.models import AuditEvent
from release import services
from release.manifests import ManifestEntry, manifest_build, manifest_commit_id
from release.models import File, Version
from tests.factories import make_release


@pytest.mark.django_db
def test_seal_writes_manifest_and_commit_from_it():
    version = make_release(artifacts={"base": "proprietary", "tokenizer": "proprietary"})

    assert version.is_sealed
    assert version.manifest is not None
    assert version.commit == manifest_commit_id(version.manifest)
    assert len(version.commit) == 40
    paths = [entry["path"] for entry in version.manifest["files"]]
    assert paths == sorted(paths)
    assert {entry["artifact"] for entry in version.manifest["files"]} == {"base", "tokenizer"}
    event = AuditEvent.objects.filter(action="version.sealed").get()
    assert event.data["commit"] == version.commit


def test_commit_is_stable_and_changes_when_any_byte_would():
    entries = [
        ManifestEntry(path="b.bin", artifact="base", size=2, sha256="b" * 64),
        ManifestEntry(path="a.bin", artifact="base", size=1, sha256="a" * 64),
    ]
    manifest = manifest_build(repo_id="acme/tiny", version="v1", entries=entries)
    reordered = manifest_build(repo_id="acme/tiny", version="v1", entries=entries[::-1])
    tampered = manifest_build(
        repo_id="acme/tiny",
        version="v1",
        entries=[entries[0], ManifestEntry(path="a.bin", artifact="base", size=1, sha256="c" * 64)],
    )

    assert manifest_commit_id(manifest) == manifest_commit_id(reordered)
    assert manifest_commit_id(tampered) != manifest_commit_id(manifest)


@pytest.mark.django_db
def test_sealed_version_refuses_new_files_and_artifacts():
    version = make_release()
    artifact = version.artifacts.get()

    with pytest.raises(NotAllowed) as refused_file:
        services.file_add(
            artifact=artifact, path="extra.bin", size=1, sha256="a" * 64, storage_key="k"
        )
    with pytest.raises(NotAllowed) as refused_artifact:
        services.artifact_create(actor=None, version=version, name="extra")
    with pytest.raises(NotAllowed) as refused_seal:
        services.version_seal(actor=None, version=version)

    assert refused_file.value.code == "version_sealed"
    assert refused_artifact.value.code == "version_sealed"
    assert refused_seal.value.code == "version_sealed"
    assert not File.objects.filter(path="extra.bin").exists()


@pytest.mark.django_db
def test_seal_refuses_an_empty_version_and_an_empty_artifact():
    version = make_release(artifacts={}, seal=False)
    with pytest.raises(NotAllowed) as no_artifacts:
        services.version_seal(actor=None, version=version)

    services.artifact_create(actor=None, version=version, name="base")
    with pytest.raises(NotAllowed) as no_files:
        services.version_seal(actor=None, version=version)

    assert no_artifacts.value.code == "empty_version"
    assert no_files.value.code == "empty_artifact"
    assert not Version.objects.get(pk=version.pk).is_sealed


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../escape.bin",
        "a/../../b",
        "a//b",
        "./a",
        "a\\b",
        "",
        "a/\x00b",
        ".git/config",
        "x" * 1025,
    ],
)
def test_file_paths_that_could_escape_are_refused(path):
    version = make_release(seal=False)

    with pytest.raises(DomainError) as refused:
        services.file_add(
            artifact=version.artifacts.get(),
            path=path,
            size=1,
            sha256=hashlib.sha256(b"x").hexdigest(),
            storage_key="k",
        )

    assert refused.value.code == "invalid_path"


@pytest.mark.django_db
def test_duplicate_path_in_a_version_is_refused_even_across_artifacts():
    version = make_release(artifacts={"base": "proprietary", "extra": "proprietary"}, seal=False)
    extra = version.artifacts.get(name="extra")

    with pytest.raises(NotAllowed) as refused:
        services.file_add(
            artifact=extra, path="base/part-0.bin", size=1, sha256="b" * 64, storage_key="k"
        )

    assert refused.value.code == "duplicate_path"


@pytest.mark.django_db
def test_database_refuses_duplicate_path_that_skips_the_service():
    version = make_release(seal=False)
    existing = version.files.first()
    assert existing is not None

    with pytest.raises(IntegrityError):
        File.objects.create(
            version=version,
            artifact=existing.artifact,
            path=existing.path,
            size=1,
            sha256="c" * 64,
            storage_key="k",
        )


@pytest.mark.django_db
@pytest.mark.parametrize(("sha256", "size"), [("A" * 64, 1), ("a" * 63, 1), ("a" * 64, -1)])
def test_bad_digest_or_size_is_refused(sha256, size):
    version = make_release(seal=False)

    with pytest.raises(DomainError):
        services.file_add(
            artifact=version.artifacts.get(),
            path="new.bin",
            size=size,
            sha256=sha256,
            storage_key="k",
        )

    assert not File.objects.filter(path="new.bin").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("org", "name", "code"),
    [
        ("acme", "tiny", "already_exists"),
        ("bad org", "x", "invalid_name"),
        ("acme", "-lead", "invalid_name"),
        ("acme", "", "invalid_name"),
    ],
)
def test_model_create_refusals(org, name, code):
    make_release(org="acme", name="tiny")

    with pytest.raises(DomainError) as refused:
        services.model_create(actor=None, org=org, name=name)

    assert refused.value.code == code


@pytest.mark.django_db
def test_version_name_may_not_look_like_a_commit():
    model = make_release().model

    with pytest.raises(DomainError) as refused:
        services.version_create(actor=None, model=model, name="a" * 40)

    assert refused.value.code == "invalid_name"
