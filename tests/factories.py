"""Builders for test data that go through the services, so tests see what production sees."""

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from django.contrib.auth.models import Permission, User

from licensing.keys import signing_key_ensure
from release import services
from release.models import Artifact, Model, Phase, Unlock, Version


def make_user(username: str, **flags: bool) -> User:
    return User.objects.create_user(
        username=username,
        email=f"{username}@example.com",
        password="correct horse battery staple",
        **flags,
    )


# What running releases and reviewing access takes, in the admin and the API alike.
MANAGER_PERMISSIONS = [
    "release.view_ingestjob",
    "release.add_ingestjob",
    "release.view_unlock",
    "release.add_unlock",
    "release.change_unlock",
    "licensing.view_accessrequest",
    "licensing.change_accessrequest",
    "licensing.view_grant",
    "licensing.add_grant",
    "licensing.change_grant",
]


def make_manager(username: str) -> User:
    """Staff with the permissions to ingest, schedule and decide unlocks, review requests and
    grant or revoke access."""
    user = make_user(username, is_staff=True)
    for permission in MANAGER_PERMISSIONS:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def make_release(
    *,
    org: str = "acme",
    name: str = "tiny",
    version: str = "v1",
    artifacts: Mapping[str, str] | None = None,
    files_per_artifact: int = 2,
    seal: bool = True,
) -> Version:
    """A model with one version whose artifacts are in the given phases ({name: phase})."""
    artifacts = artifacts if artifacts is not None else {"base": Phase.PROPRIETARY}
    model = Model.objects.filter(org=org, name=name).first() or services.model_create(
        actor=None, org=org, name=name, title=f"{org}/{name}"
    )
    release = services.version_create(actor=None, model=model, name=version)
    created: list[Artifact] = []
    for artifact_name in artifacts:
        artifact = services.artifact_create(actor=None, version=release, name=artifact_name)
        for index in range(files_per_artifact):
            body = f"{org}/{name}/{version}/{artifact_name}/{index}".encode()
            services.file_add(
                artifact=artifact,
                path=f"{artifact_name}/part-{index}.bin",
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                storage_key=f"test/{artifact_name}/{index}",
            )
        created.append(artifact)
    if seal:
        signing_key_ensure(purpose="models")
        release = services.version_seal(actor=None, version=release)
    for artifact in created:
        target = artifacts[artifact.name]
        if target == Phase.WITHDRAWN:
            services.artifact_set_phase(actor=None, artifact=artifact, phase=target, reason="test")
        elif target != Phase.PROPRIETARY:
            services.artifact_set_phase(actor=None, artifact=artifact, phase=target)
    return release


def unlock_approved(
    version: Version,
    people: Sequence[User],
    *,
    artifacts: Sequence[str] = ("base",),
    target: str = Phase.GATED,
    not_before: datetime | None = None,
) -> Unlock:
    """An unlock scheduled by `people[0]` and approved by each of the others (the last approval
    queues the work for the workers), due now unless `not_before` says otherwise."""
    scheduler, *approvers = people
    unlock = services.unlock_schedule(
        actor=scheduler,
        version=version,
        artifacts=list(artifacts),
        target_phase=target,
        not_before=not_before or datetime.now(UTC),
    )
    for person in approvers:
        services.unlock_approve(unlock=unlock, approver=person)
    return unlock
