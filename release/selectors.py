"""Reads of the catalog that depend on who is asking. Every visibility decision starts from
`artifacts_visible_to`, the one answer to "which artifacts may this person see listed?"."""

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from release.models import (
    HEARTBEAT_NAME,
    Artifact,
    File,
    Heartbeat,
    Model,
    Phase,
    Unlock,
    UnlockFile,
    Version,
)

Viewer = AbstractBaseUser | AnonymousUser

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
PUBLIC_PHASES = frozenset({Phase.GATED, Phase.OPEN})


def viewer_is_staff(user: Viewer) -> bool:
    return bool(user.is_authenticated and user.is_active and getattr(user, "is_staff", False))


def artifacts_visible_to(*, user: Viewer) -> QuerySet[Artifact]:
    """The one answer to "which artifacts may this person see listed?":

    - staff: every artifact;
    - members of a partner organisation named by a model's gate policy: that model's
      proprietary artifacts too (early access), of sealed versions;
    - everyone else: gated and open artifacts of sealed versions. (Seeing a gated artifact is
      not downloading it: that is a separate question.)

    Withdrawn artifacts and unsealed versions are invisible to all but staff.
    """
    artifacts = Artifact.objects.all()
    if viewer_is_staff(user):
        return artifacts
    visible = Q(phase__in=PUBLIC_PHASES)
    if user.is_authenticated and user.is_active:
        visible |= Q(phase=Phase.PROPRIETARY, version__model__gate_policy__partners__members=user)
    # An unsealed version is work in progress: nothing of it is public even if a phase says so.
    return artifacts.filter(visible, version__sealed_at__isnull=False).distinct()


def versions_visible_to(*, user: Viewer, model: Model | None = None) -> QuerySet[Version]:
    """Versions with at least one visible artifact, each with only its visible artifacts."""
    artifacts = artifacts_visible_to(user=user)
    # The manifest and signatures list every file: heavy, and no listing needs them.
    versions = Version.objects.filter(pk__in=artifacts.values("version_id")).defer(
        "manifest", "signature"
    )
    if model is not None:
        versions = versions.filter(model=model)
    return versions.prefetch_related(
        Prefetch(
            "artifacts",
            queryset=artifacts.order_by("name").defer("signature"),
            to_attr="visible_artifacts",
        )
    )


def models_visible_to(*, user: Viewer) -> QuerySet[Model]:
    """Models with at least one visible artifact, each with its visible versions prefetched as
    `visible_versions`; a wholly proprietary model does not exist to outsiders (404, like a
    private Hub repo)."""
    artifacts = artifacts_visible_to(user=user)
    return Model.objects.filter(pk__in=artifacts.values("version__model_id")).prefetch_related(
        Prefetch(
            "versions",
            queryset=versions_visible_to(user=user).order_by("-created_at"),
            to_attr="visible_versions",
        )
    )


def model_get_visible(*, user: Viewer, org: str, name: str) -> Model | None:
    return models_visible_to(user=user).filter(org=org, name=name).first()


def version_get_visible(*, user: Viewer, model: Model, revision: str) -> Version | None:
    """A visible version by its name or by its 40-hex commit id."""
    versions = versions_visible_to(user=user, model=model)
    if COMMIT_RE.fullmatch(revision):
        return versions.filter(commit=revision).first()
    return versions.filter(name=revision).first()


def files_visible_to(*, user: Viewer, version: Version) -> QuerySet[File]:
    return File.objects.filter(
        version=version, artifact__in=artifacts_visible_to(user=user)
    ).select_related("artifact")


@dataclass(frozen=True)
class HeartbeatStatus:
    last_seen: datetime | None
    worker: str
    healthy: bool


def heartbeat_status() -> HeartbeatStatus:
    """Whether background work runs: healthy while the last heartbeat is under two intervals old."""
    beat = Heartbeat.objects.filter(name=HEARTBEAT_NAME).first()
    if beat is None:
        return HeartbeatStatus(last_seen=None, worker="", healthy=False)
    fresh = timezone.now() - beat.last_seen < 2 * settings.HEARTBEAT_INTERVAL
    return HeartbeatStatus(last_seen=beat.last_seen, worker=beat.worker, healthy=fresh)


@dataclass(frozen=True)
class UnlockProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


def unlock_progress(*, unlock: Unlock) -> UnlockProgress:
    """Files verified in place and bytes pushed so far, for the admin and alerts."""
    rows = unlock.files.all()
    totals = rows.aggregate(
        done=Sum("bytes_done"),
        total=Sum("file__size"),
        files_done=Count("pk", filter=Q(state=UnlockFile.State.VERIFIED)),
        files_total=Count("pk"),
    )
    return UnlockProgress(
        files_done=totals["files_done"],
        files_total=totals["files_total"],
        bytes_done=totals["done"] or 0,
        bytes_total=totals["total"] or 0,
    )


def unlocks_needing_attention() -> QuerySet[Unlock]:
    """Unlocks an admin must look at: failed ones, and due ones still not ready to flip."""
    return Unlock.objects.filter(
        Q(state=Unlock.State.FAILED)
        | Q(delayed_since__isnull=False, state__in=[Unlock.State.STAGING, Unlock.State.READY])
    ).select_related("version__model")
