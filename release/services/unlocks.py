"""Scheduled unlocks: approved by the people the model's release policy names, pre-staged to
distribution storage ahead of time, verified, and flipped at `not_before` in one short
transaction. Like GitHub's protected environments, for weights.

    awaiting_approval -> scheduled -> staging -> ready -> done
                   \\-> cancelled (reject, cancel)      \\-> failed (bad bytes, phase conflict)
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from config import metrics
from config.errors import DomainError, NotAllowed
from licensing import notifications
from licensing.access import grants_suspend_for_model
from licensing.services import audit_record
from release.models import (
    Artifact,
    Blob,
    File,
    FileParts,
    Phase,
    ReleasePolicy,
    Unlock,
    UnlockApproval,
    UnlockFile,
    Version,
)
from release.publishing import DigestMismatch, PartDigests, blob_copy, blob_delete, blob_push
from release.selectors import unlock_progress
from release.services.catalog import PHASE_TRANSITIONS, artifact_set_phase

logger = logging.getLogger(__name__)

LIVE_STATES = (
    Unlock.State.AWAITING_APPROVAL,
    Unlock.State.SCHEDULED,
    Unlock.State.STAGING,
    Unlock.State.READY,
)
DEFAULT_REQUIRED_APPROVALS = 2


def _push_lease() -> timedelta:
    """A claimed push whose lease ran out belonged to a worker that died; the tick hands it on.
    Pushes renew their lease as bytes move, so this bounds silence, not duration."""
    return timedelta(seconds=settings.UNLOCK_PUSH_LEASE_SECONDS)


def _staff(user: User, what: str) -> None:
    if not (user.is_active and user.is_staff):
        raise NotAllowed(f"only staff may {what}", code="staff_only")


def _lock(unlock: Unlock) -> Unlock:
    # Only this row: the model row stays free for other transactions' foreign key checks at
    # commit (tests/release/test_lock_scope.py).
    return (
        Unlock.objects.select_for_update(of=("self",))
        .select_related("version__model")
        .get(pk=unlock.pk)
    )


def _queue_advance(unlock_id: int) -> None:
    from release.tasks import unlock_advance

    # Queued work only hurries things along: the tick re-drives every unlock from the database
    # (states and leases), so a broker that is down must not turn a committed change into an
    # error (`robust` logs it instead). The same holds for every queueing below.
    transaction.on_commit(lambda: unlock_advance.delay(unlock_id), robust=True)


def unlock_schedule(
    *,
    actor: User,
    version: Version,
    artifacts: list[str],
    target_phase: str,
    not_before: datetime,
) -> Unlock:
    """Schedule some artifacts of a sealed version to move to `gated` or `open` at `not_before`
    (UTC; a past time means as soon as approved and pushed). Approval rules are copied from the
    model's release policy, so later policy edits do not change a pending decision."""
    _staff(actor, "schedule unlocks")
    if target_phase not in (Phase.GATED, Phase.OPEN):
        raise DomainError(
            "an unlock moves artifacts to gated or open; use withdraw to stop serving",
            code="invalid_phase",
        )
    if timezone.is_naive(not_before):
        raise DomainError("not_before needs a time zone (UTC)", code="invalid_time")
    if not version.is_sealed:
        raise NotAllowed(f"version {version} is not sealed", code="version_unsealed")
    if not artifacts:
        raise DomainError("name at least one artifact", code="invalid_artifacts")
    with transaction.atomic():
        chosen = list(
            Artifact.objects.select_for_update().filter(version=version, name__in=artifacts)
        )
        missing = sorted(set(artifacts) - {a.name for a in chosen})
        if missing:
            raise DomainError(
                f"version {version} has no artifact {', '.join(missing)}", code="invalid_artifacts"
            )
        for artifact in chosen:
            if target_phase not in PHASE_TRANSITIONS[artifact.phase]:
                raise NotAllowed(
                    f"{artifact} is {artifact.phase} and cannot move to {target_phase}",
                    code="phase_transition_refused",
                )
        clash = Unlock.objects.filter(state__in=LIVE_STATES, artifacts__in=chosen).first()
        if clash is not None:
            raise NotAllowed(
                f"{clash} already covers some of these artifacts", code="unlock_conflict"
            )
        policy = ReleasePolicy.objects.filter(model=version.model).first()
        required = policy.required_approvals if policy else DEFAULT_REQUIRED_APPROVALS
        unlock = Unlock.objects.create(
            version=version,
            target_phase=target_phase,
            not_before=not_before,
            required_approvals=required,
            required_roles=list(policy.required_roles) if policy else [],
            created_by=actor,
            state=Unlock.State.AWAITING_APPROVAL if required else Unlock.State.SCHEDULED,
        )
        unlock.artifacts.set(chosen)
        audit_record(
            actor=actor,
            action="unlock.scheduled",
            subject_type="unlock",
            subject_id=unlock.pk,
            data={
                "version": str(version),
                "artifacts": sorted(artifacts),
                "target_phase": target_phase,
                "not_before": not_before.isoformat(),
                "required_approvals": required,
                "required_roles": unlock.required_roles,
            },
        )
        notifications.unlock_event("unlock.scheduled", unlock)
        if unlock.state == Unlock.State.SCHEDULED:
            _queue_advance(unlock.pk)
    return unlock


def _approvals_complete(unlock: Unlock) -> bool:
    approvals = list(unlock.approvals.filter(decision=UnlockApproval.Decision.APPROVE))
    covered = {role for approval in approvals for role in approval.roles}
    return len(approvals) >= unlock.required_approvals and set(unlock.required_roles) <= covered


def unlock_approve(*, unlock: Unlock, approver: User, comment: str = "") -> Unlock:
    """Record an approval; the unlock is scheduled once enough people, covering every required
    role, approved. The one who scheduled it may not approve it."""
    _staff(approver, "approve unlocks")
    with transaction.atomic():
        locked = _lock(unlock)
        if locked.state != Unlock.State.AWAITING_APPROVAL:
            raise NotAllowed(
                f"{locked} is {locked.state}, not awaiting approval", code="not_awaiting_approval"
            )
        if locked.created_by_id == approver.pk:
            raise NotAllowed(
                "you scheduled this unlock, so someone else must approve it", code="self_approval"
            )
        if locked.approvals.filter(approver=approver).exists():
            raise NotAllowed("you already decided on this unlock", code="already_decided")
        roles = sorted(
            set(approver.groups.values_list("name", flat=True)) & set(locked.required_roles)
        )
        if locked.required_roles and not roles:
            raise NotAllowed(
                f"approving needs one of the roles {', '.join(locked.required_roles)}",
                code="missing_role",
            )
        UnlockApproval.objects.create(
            unlock=locked,
            approver=approver,
            roles=roles,
            decision=UnlockApproval.Decision.APPROVE,
            comment=comment,
        )
        audit_record(
            actor=approver,
            action="unlock.approved",
            subject_type="unlock",
            subject_id=locked.pk,
            data={"roles": roles, "comment": comment},
        )
        if _approvals_complete(locked):
            locked.state = Unlock.State.SCHEDULED
            locked.save(update_fields=["state"])
            _queue_advance(locked.pk)
    return locked


def unlock_reject(*, unlock: Unlock, approver: User, comment: str) -> Unlock:
    """One rejection cancels the unlock; the reason is required and recorded."""
    _staff(approver, "reject unlocks")
    if not comment.strip():
        raise DomainError("a rejection needs a reason", code="reason_required")
    with transaction.atomic():
        locked = _lock(unlock)
        if locked.state != Unlock.State.AWAITING_APPROVAL:
            raise NotAllowed(
                f"{locked} is {locked.state}, not awaiting approval", code="not_awaiting_approval"
            )
        UnlockApproval.objects.create(
            unlock=locked,
            approver=approver,
            roles=[],
            decision=UnlockApproval.Decision.REJECT,
            comment=comment,
        )
        locked.state, locked.reason = Unlock.State.CANCELLED, f"rejected by {approver}: {comment}"
        locked.save(update_fields=["state", "reason"])
        audit_record(
            actor=approver,
            action="unlock.rejected",
            subject_type="unlock",
            subject_id=locked.pk,
            data={"comment": comment},
        )
    return locked


def unlock_cancel(*, unlock: Unlock, actor: User, reason: str) -> Unlock:
    """Stop a pending unlock. Blobs already pre-staged stay unreachable: nothing serves them
    until an artifact's phase says so."""
    _staff(actor, "cancel unlocks")
    if not reason.strip():
        raise DomainError("a cancellation needs a reason", code="reason_required")
    with transaction.atomic():
        locked = _lock(unlock)
        if locked.state not in LIVE_STATES:
            raise NotAllowed(f"{locked} is already {locked.state}", code="unlock_finished")
        previous = locked.state
        locked.state, locked.reason = Unlock.State.CANCELLED, reason
        locked.save(update_fields=["state", "reason"])
        audit_record(
            actor=actor,
            action="unlock.cancelled",
            subject_type="unlock",
            subject_id=locked.pk,
            data={"from": previous, "reason": reason},
        )
    return locked


def unlock_reschedule(*, unlock: Unlock, actor: User, not_before: datetime) -> Unlock:
    """Move the due time. Approvals were given for the old time, so they are cleared and the
    unlock waits for approval again; files already verified stay verified."""
    _staff(actor, "reschedule unlocks")
    if timezone.is_naive(not_before):
        raise DomainError("not_before needs a time zone (UTC)", code="invalid_time")
    with transaction.atomic():
        locked = _lock(unlock)
        if locked.state not in LIVE_STATES:
            raise NotAllowed(f"{locked} is already {locked.state}", code="unlock_finished")
        previous = locked.not_before
        locked.approvals.all().delete()
        locked.not_before, locked.delayed_since = not_before, None
        locked.state = (
            Unlock.State.AWAITING_APPROVAL if locked.required_approvals else Unlock.State.SCHEDULED
        )
        locked.save(update_fields=["not_before", "delayed_since", "state"])
        audit_record(
            actor=actor,
            action="unlock.rescheduled",
            subject_type="unlock",
            subject_id=locked.pk,
            data={"from": previous.isoformat(), "to": not_before.isoformat()},
        )
    return locked


# --- Moving the bytes and flipping ---------------------------------------------------------


def unlocks_tick(*, now: datetime | None = None) -> None:
    """The periodic heartbeat of the pipeline (Celery beat): advance every live unlock."""
    now = now or timezone.now()
    lead = timedelta(hours=settings.UNLOCK_PRESTAGE_LEAD_HOURS)
    due = Unlock.objects.filter(
        Q(state=Unlock.State.SCHEDULED, not_before__lte=now + lead)
        | Q(state__in=[Unlock.State.STAGING, Unlock.State.READY])
    )
    for unlock_id in due.values_list("pk", flat=True):
        unlock_advance(unlock_id=unlock_id, now=now)


def unlock_advance(*, unlock_id: int, now: datetime | None = None) -> None:
    """Take one unlock one or more steps forward; safe to run any number of times."""
    now = now or timezone.now()
    lead = timedelta(hours=settings.UNLOCK_PRESTAGE_LEAD_HOURS)
    unlock = Unlock.objects.get(pk=unlock_id)
    if unlock.state == Unlock.State.SCHEDULED and unlock.not_before <= now + lead:
        _start_staging(unlock)
        unlock.refresh_from_db()
    if unlock.state == Unlock.State.STAGING:
        _requeue_stalled_pushes(unlock, now)
        if not unlock.files.exclude(state=UnlockFile.State.VERIFIED).exists():
            Unlock.objects.filter(pk=unlock.pk, state=Unlock.State.STAGING).update(
                state=Unlock.State.READY
            )
            unlock.refresh_from_db()
    if unlock.not_before > now:
        return
    if unlock.state == Unlock.State.READY:
        unlock_flip(unlock_id=unlock.pk, now=now)
    elif unlock.state == Unlock.State.STAGING and unlock.delayed_since is None:
        _alert_delayed(unlock, now)


def _start_staging(unlock: Unlock) -> None:
    """Claim a scheduled unlock and queue a push for every file of its artifacts."""
    with transaction.atomic():
        claimed = Unlock.objects.filter(pk=unlock.pk, state=Unlock.State.SCHEDULED).update(
            state=Unlock.State.STAGING
        )
        if not claimed:
            return
        files = File.objects.filter(artifact__in=unlock.artifacts.all())
        # The lease also covers the wait in the queue: a message lost before any worker took it
        # is re-queued by the tick once it runs out.
        lease = timezone.now() + _push_lease()
        UnlockFile.objects.bulk_create(
            [UnlockFile(unlock=unlock, file=f, lease_until=lease) for f in files],
            ignore_conflicts=True,
        )
        audit_record(
            actor=None,
            action="unlock.staging",
            subject_type="unlock",
            subject_id=unlock.pk,
            data={"files": files.count()},
        )
        pending = list(
            unlock.files.exclude(state=UnlockFile.State.VERIFIED).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: _queue_pushes(pending), robust=True)


def _queue_public_copies(digests: list[str]) -> None:
    from release.tasks import open_blob_publish

    for sha256 in digests:
        open_blob_publish.delay(sha256)


def _queue_pushes(unlock_file_ids: list[int]) -> None:
    from release.tasks import unlock_push_file

    for unlock_file_id in unlock_file_ids:
        unlock_push_file.delay(unlock_file_id)


def _requeue_stalled_pushes(unlock: Unlock, now: datetime) -> None:
    """Pushes whose worker died, whose message was lost or that failed transiently (their lease
    ran out) go back on the queue, each at most once per lease."""
    stalled_rows = unlock.files.filter(
        state__in=[UnlockFile.State.PENDING, UnlockFile.State.PUSHING], lease_until__lt=now
    )
    stalled = list(stalled_rows.values_list("pk", flat=True))
    if not stalled:
        return
    logger.warning("unlock %s: re-queueing %d stalled pushes", unlock.pk, len(stalled))
    try:
        _queue_pushes(stalled)
    except BrokerUnavailable:
        # Their leases stay run out, so the next tick tries again; meanwhile this tick goes on
        # (a ready unlock still flips). After an outage that lost the queue, this is how every
        # push comes back.
        logger.warning("unlock %s: the broker is unreachable; the next tick re-queues", unlock.pk)
        return
    UnlockFile.objects.filter(pk__in=stalled, state=UnlockFile.State.PENDING).update(
        lease_until=now + _push_lease()
    )


def _alert_delayed(unlock: Unlock, now: datetime) -> None:
    if Unlock.objects.filter(pk=unlock.pk, delayed_since__isnull=True).update(delayed_since=now):
        progress = unlock_progress(unlock=unlock)
        logger.error(
            "unlock %s is due but not every file is verified in place yet (%s of %s); "
            "it will flip as soon as they are",
            unlock.pk,
            progress.files_done,
            progress.files_total,
        )
        audit_record(
            actor=None,
            action="unlock.delayed",
            subject_type="unlock",
            subject_id=unlock.pk,
            data={"files_done": progress.files_done, "files_total": progress.files_total},
        )


def unlock_push_file(*, unlock_file_id: int) -> None:
    """Push one file to its distribution bucket, verified. Heavy I/O outside any transaction;
    claimed by a conditional UPDATE so two deliveries of the task never push at once."""
    now = timezone.now()
    claimed = (
        UnlockFile.objects.filter(pk=unlock_file_id, unlock__state=Unlock.State.STAGING)
        .filter(
            Q(state=UnlockFile.State.PENDING)
            | Q(state=UnlockFile.State.PUSHING, lease_until__lt=now)
        )
        .update(
            state=UnlockFile.State.PUSHING,
            lease_until=now + _push_lease(),
            attempts=F("attempts") + 1,
            error="",
        )
    )
    if not claimed:
        return
    row = UnlockFile.objects.select_related("file", "unlock").get(pk=unlock_file_id)
    bucket = settings.S3_BUCKET_GATED
    verified = Blob.objects.filter(bucket=bucket, sha256=row.file.sha256).exists()

    def progress(done: int) -> None:
        # Also renews the lease: a long push is not mistaken for a dead one.
        UnlockFile.objects.filter(pk=unlock_file_id, state=UnlockFile.State.PUSHING).update(
            bytes_done=done, lease_until=timezone.now() + _push_lease()
        )

    written = False  # or already in place, verified: by another unlock, or an earlier run
    try:
        if not verified:
            written = not blob_push(
                source_key=row.file.storage_key,
                sha256=row.file.sha256,
                size=row.file.size,
                bucket=bucket,
                parts=_part_digests(row.file),
                progress=progress,
            ).skipped
    except DigestMismatch as error:
        metrics.publish_observe(operation="push", result="mismatch", size=row.file.size)
        _push_failed(row, str(error))
        return
    except Exception as error:
        # Transient (storage down, network): hand the claim back for the retry or the tick.
        UnlockFile.objects.filter(pk=unlock_file_id).update(
            state=UnlockFile.State.PENDING,
            error=f"will retry: {error}"[:2000],
            lease_until=timezone.now() + _push_lease(),
        )
        raise
    metrics.publish_observe(
        operation="push", result="written" if written else "present", size=row.file.size
    )
    with transaction.atomic():
        Blob.objects.get_or_create(
            bucket=bucket,
            sha256=row.file.sha256,
            defaults={"size": row.file.size, "verified_at": timezone.now()},
        )
        UnlockFile.objects.filter(pk=unlock_file_id).update(
            state=UnlockFile.State.VERIFIED, bytes_done=row.file.size, error=""
        )
        if (
            not UnlockFile.objects.filter(unlock_id=row.unlock_id)
            .exclude(state=UnlockFile.State.VERIFIED)
            .exists()
        ):
            _queue_advance(row.unlock_id)


def _part_digests(file: File) -> PartDigests | None:
    parts = FileParts.objects.filter(file=file).first()
    return PartDigests(parts.part_size, parts.sha256) if parts else None


def _push_failed(row: UnlockFile, reason: str) -> None:
    """The staged bytes do not match the sealed manifest: nothing was published, and the whole
    unlock stops until someone looks."""
    with transaction.atomic():
        UnlockFile.objects.filter(pk=row.pk).update(state=UnlockFile.State.FAILED, error=reason)
        failed = Unlock.objects.filter(pk=row.unlock_id, state__in=LIVE_STATES).update(
            state=Unlock.State.FAILED, reason=f"{row.file.path}: {reason}"
        )
        if failed:
            logger.error("unlock %s failed: %s: %s", row.unlock_id, row.file.path, reason)
            audit_record(
                actor=None,
                action="unlock.failed",
                subject_type="unlock",
                subject_id=row.unlock_id,
                data={"file": row.file.path, "reason": reason},
            )
            notifications.unlock_event("unlock.failed", Unlock.objects.get(pk=row.unlock_id))


def unlock_flip(*, unlock_id: int, now: datetime | None = None) -> Unlock:
    """The flip: in one short transaction, check every file is verified in place, then move
    every artifact to the target phase. O(number of artifacts), whatever the bytes."""
    now = now or timezone.now()
    with transaction.atomic():
        unlock = Unlock.objects.select_for_update().get(pk=unlock_id)
        if unlock.state != Unlock.State.READY or unlock.not_before > now:
            return unlock
        artifacts = list(unlock.artifacts.select_for_update().order_by("pk"))
        expected = File.objects.filter(artifact__in=artifacts).count()
        verified = unlock.files.filter(state=UnlockFile.State.VERIFIED).count()
        if verified != expected:
            # Cannot happen through the services; refuse rather than publish unverified bytes.
            unlock.state = Unlock.State.STAGING
            unlock.save(update_fields=["state"])
            return unlock
        try:
            with transaction.atomic():
                for artifact in artifacts:
                    artifact_set_phase(
                        actor=None,
                        artifact=artifact,
                        phase=unlock.target_phase,
                        reason=f"unlock #{unlock.pk}",
                    )
        except NotAllowed as error:
            unlock.state, unlock.reason = Unlock.State.FAILED, error.message
            unlock.save(update_fields=["state", "reason"])
            audit_record(
                actor=None,
                action="unlock.failed",
                subject_type="unlock",
                subject_id=unlock.pk,
                data={"reason": error.message},
            )
            notifications.unlock_event("unlock.failed", unlock)
            return unlock
        if unlock.target_phase == Phase.OPEN:
            digests = sorted(
                set(File.objects.filter(artifact__in=artifacts).values_list("sha256", flat=True))
            )
            transaction.on_commit(lambda: _queue_public_copies(digests), robust=True)
        unlock.state, unlock.flipped_at = Unlock.State.DONE, timezone.now()
        unlock.save(update_fields=["state", "flipped_at"])
        audit_record(
            actor=None,
            action="unlock.done",
            subject_type="unlock",
            subject_id=unlock.pk,
            data={"target_phase": unlock.target_phase, "artifacts": [a.name for a in artifacts]},
        )
        notifications.unlock_event("unlock.done", unlock)
    return unlock


def artifact_withdraw(*, actor: User, artifact: Artifact, reason: str) -> Artifact:
    """Emergency stop: the artifact stops being served at once, every live unlock that covers it
    is cancelled, and the model's license grants are suspended until staff lift it."""
    _staff(actor, "withdraw artifacts")
    with transaction.atomic():
        withdrawn = artifact_set_phase(
            actor=actor, artifact=artifact, phase=Phase.WITHDRAWN, reason=reason
        )
        for unlock in Unlock.objects.filter(state__in=LIVE_STATES, artifacts=artifact):
            unlock_cancel(unlock=unlock, actor=actor, reason=f"{artifact} withdrawn: {reason}")
        digests = list(withdrawn.files.values_list("sha256", flat=True))
        transaction.on_commit(lambda: open_blobs_unpublish(sha256s=digests), robust=True)
        grants_suspend_for_model(
            model=withdrawn.version.model, actor=actor, reason=f"{artifact} withdrawn: {reason}"
        )
    return withdrawn


# --- The public bucket ---------------------------------------------------------------------------


def open_blobs_publish(*, sha256: str) -> None:
    """Copy a verified blob of an open artifact to the anonymous-read bucket, so downloads can
    skip presigning (and a CDN can sit in front). Only after its artifact is open: before the
    flip nothing may be readable there."""
    if not File.objects.filter(sha256=sha256, artifact__phase=Phase.OPEN).exists():
        return
    source = Blob.objects.filter(bucket=settings.S3_BUCKET_GATED, sha256=sha256).first()
    if (
        source is None
        or Blob.objects.filter(bucket=settings.S3_BUCKET_PUBLIC, sha256=sha256).exists()
    ):
        return
    blob_copy(
        sha256=sha256,
        size=source.size,
        source_bucket=settings.S3_BUCKET_GATED,
        target_bucket=settings.S3_BUCKET_PUBLIC,
    )
    # Counted as written even in the rare case that an earlier run copied it and died before
    # recording it (blob_copy then only verified it).
    metrics.publish_observe(operation="copy", result="written", size=source.size)
    Blob.objects.get_or_create(
        bucket=settings.S3_BUCKET_PUBLIC,
        sha256=sha256,
        defaults={"size": source.size, "verified_at": timezone.now()},
    )


def open_blobs_unpublish(*, sha256s: list[str]) -> None:
    """After a withdrawal: take back from the public bucket every blob no open file needs."""
    still_open = set(
        File.objects.filter(sha256__in=sha256s, artifact__phase=Phase.OPEN).values_list(
            "sha256", flat=True
        )
    )
    for sha256 in set(sha256s) - still_open:
        # Forget it first: from this moment downloads redirect to presigned URLs (or refuse).
        Blob.objects.filter(bucket=settings.S3_BUCKET_PUBLIC, sha256=sha256).delete()
        blob_delete(bucket=settings.S3_BUCKET_PUBLIC, sha256=sha256)
