"""Every write to the release catalog. Each service checks the state it starts from under a row
lock, changes it, and appends an audit event in the same transaction."""

import re

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from config.text import plain_text_clean
from licensing.keys import signing_key_active
from licensing.models import SigningKey
from licensing.services import audit_record
from release.manifests import (
    ManifestEntry,
    file_path_validate,
    manifest_build,
    manifest_commit_id,
)
from release.model_signing import signature_bundle
from release.models import (
    HEARTBEAT_NAME,
    SHA256_PATTERN,
    Artifact,
    File,
    Heartbeat,
    Model,
    Phase,
    Version,
    name_validator,
)

Actor = AbstractBaseUser | AnonymousUser | None
# Top-level paths of the service: an organisation of that name would be shadowed by them in
# Hub-style URLs (`/{org}/{name}/resolve/...`).
RESERVED_ORGS = frozenset(
    {
        "admin",
        "api",
        "static",
        "healthz",
        "readyz",
        "metrics",
        "models",
        "accounts",
        "me",
        "settings",
        "tokens",
        "docs",
    }
)

# Forward only; withdrawal is an emergency stop reachable from every phase and final.
PHASE_TRANSITIONS: dict[str, frozenset[str]] = {
    Phase.PROPRIETARY: frozenset({Phase.GATED, Phase.OPEN, Phase.WITHDRAWN}),
    Phase.GATED: frozenset({Phase.OPEN, Phase.WITHDRAWN}),
    Phase.OPEN: frozenset({Phase.WITHDRAWN}),
    Phase.WITHDRAWN: frozenset(),
}


def _validate_name(value: str, what: str) -> None:
    try:
        name_validator(value)
    except ValidationError as error:
        raise DomainError(f"{what} {value!r}: {error.messages[0]}", code="invalid_name") from error


def model_create(*, actor: Actor, org: str, name: str, title: str = "", card: str = "") -> Model:
    """Register a new model repository `org/name`."""
    _validate_name(org, "organisation")
    if org.lower() in RESERVED_ORGS:
        raise DomainError(f"{org!r} is reserved for the service's own paths", code="invalid_name")
    _validate_name(name, "model name")
    try:
        title = plain_text_clean(title, limit=200, multiline=False)
    except ValueError as problem:
        raise DomainError(f"the title {problem}", code="invalid_title") from None
    try:
        with transaction.atomic():
            model = Model.objects.create(org=org, name=name, title=title, card=card)
            audit_record(
                actor=actor,
                action="model.created",
                subject_type="model",
                subject_id=model.pk,
                data={"repo_id": model.repo_id},
            )
    except IntegrityError as error:
        raise NotAllowed(f"model {org}/{name} already exists", code="already_exists") from error
    return model


def version_create(*, actor: Actor, model: Model, name: str) -> Version:
    """Open a new, unsealed version of a model."""
    _validate_name(name, "version name")
    if re.fullmatch(r"[0-9a-f]{40}", name):
        # Hub clients treat 40 hex digits as a commit id, never as a name.
        raise DomainError("a version name must not look like a commit id", code="invalid_name")
    try:
        with transaction.atomic():
            version = Version.objects.create(model=model, name=name)
            audit_record(
                actor=actor,
                action="version.created",
                subject_type="version",
                subject_id=version.pk,
                data={"model": model.repo_id, "version": name},
            )
    except IntegrityError as error:
        raise NotAllowed(
            f"{model.repo_id} already has a version {name!r}", code="already_exists"
        ) from error
    return version


def _lock_unsealed(version_id: int) -> Version:
    # Only this row: the model row stays free for other transactions' foreign key checks at
    # commit (tests/release/test_lock_scope.py).
    version = (
        Version.objects.select_for_update(of=("self",)).select_related("model").get(pk=version_id)
    )
    if version.is_sealed:
        raise NotAllowed(f"version {version} is sealed and cannot change", code="version_sealed")
    return version


def artifact_create(*, actor: Actor, version: Version, name: str) -> Artifact:
    """Add a named artifact to an unsealed version; it starts proprietary."""
    _validate_name(name, "artifact name")
    with transaction.atomic():
        locked = _lock_unsealed(version.pk)
        if locked.artifacts.filter(name=name).exists():
            raise NotAllowed(
                f"version {locked} already has an artifact {name!r}", code="already_exists"
            )
        artifact = Artifact.objects.create(version=locked, name=name)
        audit_record(
            actor=actor,
            action="artifact.created",
            subject_type="artifact",
            subject_id=artifact.pk,
            data={"version": str(locked), "artifact": name},
        )
    return artifact


def file_add(*, artifact: Artifact, path: str, size: int, sha256: str, storage_key: str) -> File:
    """Record a file of an unsealed version. Not audited one by one: sealing records the
    manifest, which names every file with its digest."""
    file_path_validate(path)
    if size < 0:
        raise DomainError(f"file {path!r}: size must not be negative", code="invalid_size")
    if not re.fullmatch(SHA256_PATTERN, sha256):
        raise DomainError(
            f"file {path!r}: sha256 must be 64 lowercase hex digits", code="invalid_digest"
        )
    with transaction.atomic():
        version = _lock_unsealed(artifact.version_id)
        if version.files.filter(path=path).exists():
            raise NotAllowed(
                f"version {version} already has a file {path!r}", code="duplicate_path"
            )
        return File.objects.create(
            version=version,
            artifact=artifact,
            path=path,
            size=size,
            sha256=sha256,
            storage_key=storage_key,
        )


def version_seal(*, actor: Actor, version: Version) -> Version:
    """Freeze a version: write its manifest, derive its commit id, and sign it (the whole
    version, and each artifact on its own) with the active model-signing key. Irreversible."""
    with transaction.atomic():
        locked = _lock_unsealed(version.pk)
        artifacts = list(locked.artifacts.prefetch_related("files"))
        if not artifacts:
            raise NotAllowed(f"version {locked} has no artifacts to seal", code="empty_version")
        empty = [artifact.name for artifact in artifacts if not artifact.files.all()]
        if empty:
            raise NotAllowed(
                f"artifacts without files cannot be sealed: {', '.join(empty)}",
                code="empty_artifact",
            )
        manifest = manifest_build(
            repo_id=locked.model.repo_id,
            version=locked.name,
            entries=(
                ManifestEntry(path=f.path, artifact=a.name, size=f.size, sha256=f.sha256)
                for a in artifacts
                for f in a.files.all()
            ),
        )
        locked.manifest = manifest
        locked.commit = manifest_commit_id(manifest)
        locked.sealed_at = timezone.now()
        key = signing_key_active(purpose=SigningKey.Purpose.MODELS)
        locked.signing_kid = key.kid
        locked.signature = signature_bundle(
            model_name=f"{locked.model.repo_id}@{locked.name}",
            entries=[(e["path"], e["sha256"]) for e in manifest["files"]],
            key=key,
        )
        locked.save(update_fields=["manifest", "commit", "sealed_at", "signature", "signing_kid"])
        for artifact in artifacts:
            artifact.signature = signature_bundle(
                model_name=f"{locked.model.repo_id}@{locked.name}:{artifact.name}",
                entries=[(f.path, f.sha256) for f in artifact.files.all()],
                key=key,
            )
            artifact.save(update_fields=["signature"])
        audit_record(
            actor=actor,
            action="version.sealed",
            subject_type="version",
            subject_id=locked.pk,
            data={"version": str(locked), "commit": locked.commit, "files": len(manifest["files"])},
        )
    return locked


def artifact_set_phase(
    *, actor: Actor, artifact: Artifact, phase: str, reason: str = ""
) -> Artifact:
    """Move an artifact to another phase: forward only (proprietary, gated, open), or withdrawn
    from any phase with a reason. Only sealed versions leave the proprietary phase."""
    if phase not in Phase.values:
        raise DomainError(
            f"unknown phase {phase!r}; one of {', '.join(Phase.values)}", code="invalid_phase"
        )
    reason = reason.strip()
    if phase == Phase.WITHDRAWN and not reason:
        raise DomainError("a withdrawal needs a reason", code="reason_required")
    with transaction.atomic():
        # The artifact row alone: locking its model too would deadlock with access requests,
        # whose foreign key checks take the model row at commit while they hold the audit lock
        # (tests/release/test_lock_scope.py).
        locked = (
            Artifact.objects.select_for_update(of=("self",))
            .select_related("version__model")
            .get(pk=artifact.pk)
        )
        if phase not in PHASE_TRANSITIONS[locked.phase]:
            raise NotAllowed(
                f"{locked} cannot move from {locked.phase} to {phase}"
                + (
                    " (phases only move forward)"
                    if locked.phase != Phase.WITHDRAWN
                    else " (a withdrawn artifact stays withdrawn)"
                ),
                code="phase_transition_refused",
            )
        if phase != Phase.WITHDRAWN and not locked.version.is_sealed:
            raise NotAllowed(f"version {locked.version} is not sealed yet", code="version_unsealed")
        previous = locked.phase
        locked.phase = phase
        locked.phase_changed_at = timezone.now()
        locked.save(update_fields=["phase", "phase_changed_at"])
        audit_record(
            actor=actor,
            action="artifact.phase_changed",
            subject_type="artifact",
            subject_id=locked.pk,
            data={"artifact": str(locked), "from": previous, "to": phase, "reason": reason},
        )
    return locked


def heartbeat_record(*, worker: str) -> None:
    """Note that a worker ran the periodic heartbeat just now."""
    Heartbeat.objects.update_or_create(
        name=HEARTBEAT_NAME, defaults={"last_seen": timezone.now(), "worker": worker[:255]}
    )
