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

from licensing import read_cache
from licensing.models import AccessRequest, DownloadToken, Grant
from licensing.selectors import (
    grant_live_for,
    grant_live_for_remembered,
    partner_may_see_proprietary,
)
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


def model_get_visible(
    *, user: Viewer, org: str, name: str, with_versions: bool = False
) -> Model | None:
    """A model the caller may see; `with_versions` also prefetches its visible versions and
    artifacts (as `visible_versions`), which only pages that show them need."""
    if with_versions:
        return models_visible_to(user=user).filter(org=org, name=name).first()
    visible = artifacts_visible_to(user=user).values("version__model_id")
    return Model.objects.filter(pk__in=visible, org=org, name=name).first()


def version_get_visible(*, user: Viewer, model: Model, revision: str) -> Version | None:
    """A visible version by its name or by its 40-hex commit id."""
    versions = versions_visible_to(user=user, model=model)
    if COMMIT_RE.fullmatch(revision):
        return versions.filter(commit=revision).first()
    return versions.filter(name=revision).first()


# A sealed version's files, artifacts, names and commit never change (the services and the
# admin allow no edit), so its file rows are remembered for this long: what can change, the
# artifact's phase, is checked on every use against the remembered phases.
SEALED_FILE_MAX_AGE = 300.0


def _artifact_phases(version_id: int) -> dict[int, str]:
    """Each artifact's phase, by id, for a version (remembered: a change is seen within a
    second)."""
    return read_cache.remembered(
        ("phases", version_id),
        lambda: dict(
            Artifact.objects.filter(version_id=version_id).order_by().values_list("id", "phase")
        ),
    )


def _phase_current(file: File | None) -> bool:
    return file is None or (
        _artifact_phases(file.artifact.version_id).get(file.artifact_id) == file.artifact.phase
    )


def _file_max_age(file: File | None) -> float:
    if file is not None and file.artifact.version.is_sealed:
        return SEALED_FILE_MAX_AGE
    return read_cache.KEEP


def file_by_revision(*, org: str, name: str, revision: str, path: str) -> File | None:
    """A file by model, version name or commit, and path, in one query, with no regard to who
    asks: callers must decide access with `file_download_decision`. Remembered per process
    (`licensing.read_cache`): a file of a sealed version for up to five minutes, as long as its
    artifact's remembered phase is still the one it was loaded with; anything else until a change
    is announced. A phase change takes effect within a second everywhere, at once in the process
    that made it."""

    def load() -> File | None:
        files = (
            File.objects.select_related("artifact__version__model")
            # Signatures, the manifest (every file of the version) and the card: large, and
            # nothing on the download path reads them.
            .defer(
                "artifact__signature",
                "artifact__version__manifest",
                "artifact__version__signature",
                "artifact__version__model__card",
            )
            .filter(version__model__org=org, version__model__name=name, path=path)
        )
        if COMMIT_RE.fullmatch(revision):
            files = files.filter(version__commit=revision)
        else:
            files = files.filter(version__name=revision)
        # At most one row (unique model, version name or commit, path): no ORDER BY to build.
        return next(iter(files.order_by()[:1]), None)

    return read_cache.remembered(
        ("file", org, name, revision, path),
        load,
        max_age=_file_max_age,
        still_valid=_phase_current,
    )


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


@dataclass(frozen=True)
class UnlockApprovalStatus:
    approvers: list[str]  # who approved, in order
    required: int
    missing_count: int  # approvals still needed
    missing_roles: list[str]  # required roles no approver has covered yet

    @property
    def complete(self) -> bool:
        return not self.missing_count and not self.missing_roles


def unlock_approval_status(*, unlock: Unlock) -> UnlockApprovalStatus:
    """What `unlock_approve` still waits for: enough approvals, and every required role among
    them. Reads `unlock.approvals.all()`, so a caller listing many unlocks prefetches
    `approvals__approver`."""
    approvals = [a for a in unlock.approvals.all() if a.decision == "approve"]
    covered = {role for approval in approvals for role in approval.roles}
    return UnlockApprovalStatus(
        approvers=[a.approver.get_username() for a in sorted(approvals, key=lambda a: a.pk)],
        required=unlock.required_approvals,
        missing_count=max(0, unlock.required_approvals - len(approvals)),
        missing_roles=sorted(set(unlock.required_roles) - covered),
    )


def unlocks_needing_attention() -> QuerySet[Unlock]:
    """Unlocks an admin must look at: failed ones, and due ones still not ready to flip."""
    return Unlock.objects.filter(
        Q(state=Unlock.State.FAILED)
        | Q(delayed_since__isnull=False, state__in=[Unlock.State.STAGING, Unlock.State.READY])
    ).select_related("version__model")


# --- May this principal download this file now? ---------------------------------------------


@dataclass(frozen=True)
class DownloadDecision:
    """The answer, with what to tell the caller when it is no: an HTTP status, a stable code
    and a message that says what to do next."""

    allowed: bool
    status: int = 200
    code: str = "ok"
    message: str = ""
    grant: Grant | None = None  # the grant that allowed it, for per-grant quotas


def _access_page(model: Model) -> str:
    return f"{settings.SITE_URL}/models/{model.repo_id}"


def file_download_decision(
    *, user: Viewer, token: DownloadToken | None, file: File, now: datetime | None = None
) -> DownloadDecision:
    """The one answer to "may this principal (anonymous, a signed-in user, or a token's user)
    download this file of this version now?":

    - what the caller may not see (below) answers 404, exactly like what does not exist;
    - a token limited to other models: no;
    - withdrawn: no one;
    - unsealed versions: staff only;
    - proprietary: staff, and members of a partner organisation named by the model's policy;
    - gated: staff, and holders of a live grant (not revoked, suspended or expired, for the
      license version the model requires now) that covers the artifact;
    - open: anyone.
    Things the caller may not even see answer 404, exactly like things that do not exist.
    """
    artifact = file.artifact
    model = artifact.version.model
    staff = viewer_is_staff(user)
    hidden = DownloadDecision(False, 404, "not_found", "no such file")
    if not staff and (
        artifact.phase == Phase.WITHDRAWN
        or not artifact.version.is_sealed
        or (
            artifact.phase == Phase.PROPRIETARY
            and not partner_may_see_proprietary(user=user, model_id=model.pk)
        )
    ):
        return hidden  # what the caller may not see does not exist for them
    if token is not None and token.model_ids and model.repo_id not in token.model_ids:
        return DownloadDecision(
            False,
            403,
            "token_scope",
            f"this token is limited to {', '.join(token.model_ids)}; "
            f"create a token that includes {model.repo_id}",
        )
    if artifact.phase == Phase.WITHDRAWN:
        return DownloadDecision(
            False, 403, "withdrawn", f"{artifact.name} was withdrawn and is served to no one"
        )
    if staff or artifact.phase in (Phase.OPEN, Phase.PROPRIETARY):
        return DownloadDecision(True)  # proprietary reached here only for partner members
    # Gated.
    if not user.is_authenticated:
        return DownloadDecision(
            False,
            401,
            "gated",
            f"{model.repo_id} is gated: sign in or send a Weightgate token, "
            f"and request access at {_access_page(model)}",
        )
    grant = (
        grant_live_for_remembered(user=user, model_id=model.pk)
        if now is None
        else grant_live_for(user=user, model_id=model.pk, now=now)
    )
    if grant is not None and ("*" in grant.artifacts or artifact.name in grant.artifacts):
        return DownloadDecision(True, grant=grant)
    return DownloadDecision(False, 403, "gated", _why_no_access(user, model, grant))


def _why_no_access(user: Viewer, model: Model, grant: Grant | None) -> str:
    page = _access_page(model)
    user_id = user.pk or 0  # signed in: checked by the caller
    if grant is not None:
        return f"your grant for {model.repo_id} does not cover this artifact; ask at {page}"
    latest = (
        AccessRequest.objects.filter(user_id=user_id, model=model).order_by("-created_at").first()
    )
    if latest is None or latest.status == AccessRequest.Status.WITHDRAWN:
        return f"{model.repo_id} is gated: request access at {page}"
    if latest.status == AccessRequest.Status.PENDING:
        return f"your request for {model.repo_id} is pending review"
    if latest.status == AccessRequest.Status.REJECTED:
        return f"your request for {model.repo_id} was rejected: {latest.reason}" + (
            f"; you may apply again at {page}" if latest.may_reapply else ""
        )
    last = Grant.objects.filter(user_id=user_id, model=model).order_by("-issued_at").first()
    if last is not None:
        if last.revoked_at is not None:
            return f"your grant for {model.repo_id} was revoked: {last.revoked_reason}"
        if last.suspended_at is not None:
            return f"your grant for {model.repo_id} is suspended while part of it is withdrawn"
        if last.expires_at is not None and last.expires_at <= timezone.now():
            return f"your grant for {model.repo_id} expired: request access again at {page}"
        return f"the license of {model.repo_id} changed: accept the current license at {page}"
    return f"{model.repo_id} is gated: request access at {page}"


# --- What the portal announces ---------------------------------------------------------------

# Approved and on their way: announced on the model page. An unlock still awaiting approval may
# never happen, so it is not announced.
ANNOUNCED_UNLOCK_STATES = (Unlock.State.SCHEDULED, Unlock.State.STAGING, Unlock.State.READY)


def unlocks_announced_for(*, artifact_ids: list[int]) -> dict[int, list[Unlock]]:
    """Approved unlocks still to come for these artifacts (which the caller already knows are
    visible to the viewer), by artifact id, soonest first."""
    links = (
        Unlock.artifacts.through.objects.filter(
            artifact_id__in=artifact_ids, unlock__state__in=ANNOUNCED_UNLOCK_STATES
        )
        .select_related("unlock")
        .order_by("unlock__not_before", "unlock_id")
    )
    announced: dict[int, list[Unlock]] = {}
    for link in links:
        announced.setdefault(link.artifact_id, []).append(link.unlock)
    return announced
