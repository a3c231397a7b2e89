"""Services for licenses, gate policies, access requests and grants: every write of the access
flow. Each locks what it changes, checks the allowed transition, audits, and notifies on commit.

    access request:  pending -> approved | rejected | withdrawn (by its author)
                     approved -> pending (cancel) | rejected
    a grant is issued on every approval and revoked when access ends; exactly one live grant
    per approved request (database constraint).
"""

import hashlib
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from config.text import hidden_characters
from licensing import notifications
from licensing.grants import grant_token
from licensing.keys import signing_key_active
from licensing.models import AccessRequest, GatePolicy, Grant, License, SigningKey
from licensing.publishing import revocation_list_publish
from licensing.request_forms import form_answers_clean, form_fields_check
from licensing.services import audit_record

Status = AccessRequest.Status


def _staff(user: User, what: str) -> None:
    if not (user.is_active and user.is_staff):
        raise NotAllowed(f"only staff may {what}", code="staff_only")


# --- Licenses and policies -------------------------------------------------------------------


def license_publish(*, actor: User, license: License) -> License:
    """Freeze a license version: its text hash is computed and it can never change again."""
    _staff(actor, "publish licenses")
    with transaction.atomic():
        locked = License.objects.select_for_update().get(pk=license.pk)
        if locked.published_at is not None:
            raise NotAllowed(f"{locked} is already published", code="license_published")
        if not locked.text.strip():
            raise DomainError("a license needs its text", code="license_empty")
        # People accept what they see: a bidi override or zero-width character would make the
        # text on screen differ from the text whose sha256 they accept.
        hidden = hidden_characters(locked.text, allowed="\n\t\r") + hidden_characters(
            locked.title + locked.version, allowed=""
        )
        if hidden:
            raise DomainError(
                "the license holds control or invisible formatting characters: "
                + ", ".join(hidden[:10]),
                code="license_hidden_characters",
            )
        locked.text_sha256 = hashlib.sha256(locked.text.encode()).hexdigest()
        locked.published_at = timezone.now()
        locked.save(update_fields=["text_sha256", "published_at"])
        audit_record(
            actor=actor,
            action="license.published",
            subject_type="license",
            subject_id=locked.pk,
            data={"license": locked.slug, "version": locked.version, "sha256": locked.text_sha256},
        )
    return locked


def gate_policy_set(*, actor: User, model: Any, **fields: Any) -> GatePolicy:
    """Create or change a model's gate policy. Only published licenses may be required."""
    _staff(actor, "change gate policies")
    if "form_fields" in fields:
        form_fields_check(fields["form_fields"])
    license = fields.get("license")
    if license is not None and license.published_at is None:
        raise NotAllowed(f"{license} is not published", code="license_unpublished")
    with transaction.atomic():
        policy, _ = GatePolicy.objects.select_for_update().get_or_create(model=model)
        for name, value in fields.items():
            setattr(policy, name, value)
        policy.full_clean(exclude=["model", "license"])
        policy.save()
        audit_record(
            actor=actor,
            action="gate_policy.changed",
            subject_type="model",
            subject_id=model.pk,
            data={name: (str(v) if name == "license" else v) for name, v in fields.items()},
        )
    return policy


# --- Access requests ---------------------------------------------------------------------------


def access_request_submit(
    *,
    user: User,
    model: Any,
    license: License,
    answers: dict[str, Any],
    ip: str | None = None,
    user_agent: str = "",
) -> AccessRequest:
    """A developer accepts `license` (it must be the model's current version) and answers the
    form. Auto mode approves at once; manual mode waits for a reviewer."""
    policy = GatePolicy.objects.select_related("license").filter(model=model).first()
    if policy is None or policy.license is None:
        raise NotAllowed(f"{model} does not take access requests", code="not_gated")
    if license.pk != policy.license.pk:
        raise NotAllowed(
            f"the license changed: accept {policy.license} (version {policy.license.version})",
            code="license_outdated",
        )
    cleaned = form_answers_clean(policy.form_fields, answers)
    # Answers are normalised to upper case; the policy's list is typed by people (admin, JSON).
    blocked = {str(code).strip().upper() for code in policy.blocked_countries}
    countries = {
        v
        for f in policy.form_fields
        if f["type"] == "country"
        for v in [cleaned.get(f["name"])]
        if v
    }
    if countries & blocked:
        raise NotAllowed(
            f"{model} is not available in {', '.join(sorted(countries & blocked))}",
            code="country_blocked",
        )
    with transaction.atomic():
        last = (
            AccessRequest.objects.select_for_update()
            .filter(user=user, model=model)
            .order_by("-created_at")
            .first()
        )
        if last is not None and last.status in (Status.PENDING, Status.APPROVED):
            raise NotAllowed(
                f"you already have a {last.status} request for {model}", code="already_requested"
            )
        if last is not None and last.status == Status.REJECTED and not last.may_reapply:
            raise NotAllowed(
                f"your request for {model} was rejected: {last.reason}", code="reapply_not_allowed"
            )
        try:
            with transaction.atomic():
                request = AccessRequest.objects.create(
                    user=user,
                    model=model,
                    license=license,
                    license_sha256=license.text_sha256,
                    answers=cleaned,
                    ip=ip,
                    # A header is whatever the client sent: keep what can be shown and stored.
                    user_agent="".join(c for c in user_agent if c.isprintable())[:512],
                )
        except IntegrityError as error:  # a concurrent submit by the same person
            raise NotAllowed(
                f"you already have a request for {model}", code="already_requested"
            ) from error
        grant = None
        if policy.approval_mode == GatePolicy.Mode.AUTO:
            grant = _approve_state(request, reviewer=None, policy=policy)
        notifications.access_request_event("access_request.created", request)
        # Audit events go last: the chain's lock is then held only for the appends, not for
        # the signing and inserts before them (it serialises every audited write).
        audit_record(
            actor=user,
            action="access_request.created",
            subject_type="access_request",
            subject_id=request.pk,
            data={"model": str(model), "license_sha256": license.text_sha256},
        )
        if grant is not None:
            _approve_record(request, reviewer=None, grant=grant)
    return request


def _lock_request(request: AccessRequest) -> AccessRequest:
    # Lock only the request row: `license` is nullable, and PostgreSQL refuses FOR UPDATE on the
    # nullable side of the outer join select_related makes for it.
    return (
        AccessRequest.objects.select_for_update(of=("self",))
        .select_related("model", "license")
        .get(pk=request.pk)
    )


def access_request_approve(*, request: AccessRequest, reviewer: User) -> AccessRequest:
    """Approve a pending request and issue its signed grant."""
    _staff(reviewer, "review access requests")
    with transaction.atomic():
        locked = _lock_request(request)
        if locked.status != Status.PENDING:
            raise NotAllowed(f"the request is {locked.status}, not pending", code="not_pending")
        policy = GatePolicy.objects.get(model=locked.model)
        if policy.license_id != locked.license_id:
            # A grant under a license the model no longer offers would give no access.
            raise NotAllowed(
                "the model's license changed since this request: reject it with "
                "may_reapply so the requester accepts the current one",
                code="license_outdated",
            )
        return _approve(locked, reviewer=reviewer, policy=policy)


def _approve(request: AccessRequest, *, reviewer: User | None, policy: GatePolicy) -> AccessRequest:
    grant = _approve_state(request, reviewer=reviewer, policy=policy)
    _approve_record(request, reviewer=reviewer, grant=grant)
    return request


def _approve_state(request: AccessRequest, *, reviewer: User | None, policy: GatePolicy) -> Grant:
    """The approval's writes: the request's new state and its signed grant."""
    request.status, request.reviewer, request.decided_at = Status.APPROVED, reviewer, timezone.now()
    request.reason = ""
    request.save(update_fields=["status", "reviewer", "decided_at", "reason"])
    return _grant_issue(request=request, policy=policy)


def _approve_record(request: AccessRequest, *, reviewer: User | None, grant: Grant) -> None:
    """The approval's notification and, last, its audit event."""
    notifications.access_request_event("access_request.approved", request)
    audit_record(
        actor=reviewer,
        action="access_request.approved",
        subject_type="access_request",
        subject_id=request.pk,
        data={"grant": str(grant.jti), "auto": reviewer is None},
    )


def access_request_reject(
    *, request: AccessRequest, reviewer: User, reason: str, may_reapply: bool = False
) -> AccessRequest:
    """Reject (also an approved request: its grant is revoked). The reason is shown to the
    requester; they may apply again only if the reviewer allows it."""
    _staff(reviewer, "review access requests")
    reason = reason.strip()
    if len(reason) > 500:
        raise DomainError("a reason is at most 500 characters", code="reason_too_long")
    with transaction.atomic():
        locked = _lock_request(request)
        if locked.status not in (Status.PENDING, Status.APPROVED):
            raise NotAllowed(f"the request is {locked.status}", code="not_open")
        _revoke_live(locked, actor=reviewer, reason=f"access rejected: {reason}")
        locked.status, locked.reviewer, locked.decided_at = (
            Status.REJECTED,
            reviewer,
            timezone.now(),
        )
        locked.reason, locked.may_reapply = reason, may_reapply
        locked.save(update_fields=["status", "reviewer", "decided_at", "reason", "may_reapply"])
        audit_record(
            actor=reviewer,
            action="access_request.rejected",
            subject_type="access_request",
            subject_id=locked.pk,
            data={"reason": reason, "may_reapply": may_reapply},
        )
        notifications.access_request_event("access_request.rejected", locked)
    return locked


def access_request_cancel(*, request: AccessRequest, reviewer: User) -> AccessRequest:
    """Move an approved request back to pending; its grant is revoked until approved again."""
    _staff(reviewer, "review access requests")
    with transaction.atomic():
        locked = _lock_request(request)
        if locked.status != Status.APPROVED:
            raise NotAllowed(f"the request is {locked.status}, not approved", code="not_approved")
        _revoke_live(locked, actor=reviewer, reason="access cancelled by a reviewer")
        locked.status, locked.reviewer, locked.decided_at = Status.PENDING, reviewer, None
        locked.save(update_fields=["status", "reviewer", "decided_at"])
        audit_record(
            actor=reviewer,
            action="access_request.cancelled",
            subject_type="access_request",
            subject_id=locked.pk,
            data={},
        )
    return locked


def access_request_withdraw(*, request: AccessRequest, user: User) -> AccessRequest:
    """The author takes back a pending request."""
    with transaction.atomic():
        locked = _lock_request(request)
        if locked.user_id != user.pk:
            raise NotAllowed("only its author may withdraw a request", code="not_author")
        if locked.status != Status.PENDING:
            raise NotAllowed(f"the request is {locked.status}, not pending", code="not_pending")
        locked.status = Status.WITHDRAWN
        locked.save(update_fields=["status"])
        audit_record(
            actor=user,
            action="access_request.withdrawn",
            subject_type="access_request",
            subject_id=locked.pk,
            data={},
        )
    return locked


def access_grant_direct(*, model: Any, user: User, reviewer: User) -> AccessRequest:
    """Staff give access to someone who never asked: an approved request on their behalf,
    under the current license, and its grant."""
    _staff(reviewer, "grant access")
    policy = GatePolicy.objects.select_related("license").filter(model=model).first()
    if policy is None or policy.license is None:
        raise NotAllowed(f"{model} has no license to grant under", code="not_gated")
    with transaction.atomic():
        live = (
            AccessRequest.objects.select_for_update()
            .filter(user=user, model=model, status__in=[Status.PENDING, Status.APPROVED])
            .first()
        )
        if live is not None and live.status == Status.APPROVED:
            raise NotAllowed(f"{user} already has access to {model}", code="already_granted")
        if live is None:
            live = AccessRequest.objects.create(
                user=user,
                model=model,
                license=policy.license,
                license_sha256=policy.license.text_sha256,
                answers={},
                user_agent="granted by staff",
            )
        return _approve(live, reviewer=reviewer, policy=policy)


# --- Grants --------------------------------------------------------------------------------------


def _grant_issue(*, request: AccessRequest, policy: GatePolicy) -> Grant:
    assert request.license is not None
    key = signing_key_active(purpose=SigningKey.Purpose.GRANTS)
    issued_at = timezone.now()
    expires_at = (
        issued_at + timedelta(days=policy.grant_ttl_days) if policy.grant_ttl_days else None
    )
    jti = uuid.uuid4()
    artifacts = ["*"]
    token = grant_token(
        key=key,
        issuer=settings.SITE_URL,
        grant_id=str(jti),
        user_id=request.user_id,
        model=str(request.model),
        artifacts=artifacts,
        license_id=request.license.slug,
        license_version=request.license.version,
        license_sha256=request.license_sha256,
        issued_at=issued_at,
        expires_at=expires_at,
    )
    try:
        with transaction.atomic():
            return Grant.objects.create(
                jti=jti,
                request=request,
                user_id=request.user_id,
                model_id=request.model_id,
                artifacts=artifacts,
                license=request.license,
                license_sha256=request.license_sha256,
                kid=key.kid,
                token=token,
                issued_at=issued_at,
                expires_at=expires_at,
            )
    except IntegrityError as error:
        # Two approvals raced past the row lock (or skipped it): the database keeps one grant.
        raise NotAllowed("this request already has a grant", code="already_granted") from error


def _revoke_live(request: AccessRequest, *, actor: User | None, reason: str) -> None:
    for grant in Grant.objects.select_for_update().filter(request=request, revoked_at__isnull=True):
        _revoke(grant, actor=actor, reason=reason)


def _revoke(grant: Grant, *, actor: User | None, reason: str) -> None:
    grant.revoked_at, grant.revoked_reason = timezone.now(), reason[:500]
    grant.save(update_fields=["revoked_at", "revoked_reason"])
    audit_record(
        actor=actor,
        action="grant.revoked",
        subject_type="grant",
        subject_id=str(grant.jti),
        data={"reason": reason},
    )
    notifications.grant_event("grant.revoked", grant)
    # Re-sign the list at once rather than at the next periodic refresh: clients that fetch it
    # must see the revocation now. Robust: the revocation is committed whatever the cache says.
    transaction.on_commit(revocation_list_publish, robust=True)


def grant_revoke(*, grant: Grant, actor: User, reason: str) -> Grant:
    """Revoke a grant now; downloads check revocation on every request, and the signed
    revocation list is re-published on commit."""
    _staff(actor, "revoke grants")
    if not reason.strip():
        raise DomainError("a revocation needs a reason", code="reason_required")
    with transaction.atomic():
        locked = Grant.objects.select_for_update().get(pk=grant.pk)
        if locked.revoked_at is not None:
            raise NotAllowed("the grant is already revoked", code="already_revoked")
        _revoke(locked, actor=actor, reason=reason.strip())
    return locked


def grants_suspend_for_model(*, model: Any, actor: User | None, reason: str) -> int:
    """An artifact of the model was withdrawn: every live grant stops working until staff lift
    the suspension. Returns how many grants were suspended."""
    with transaction.atomic():
        count = Grant.objects.filter(
            model=model, revoked_at__isnull=True, suspended_at__isnull=True
        ).update(suspended_at=timezone.now())
        if count:
            audit_record(
                actor=actor,
                action="grant.suspended",
                subject_type="model",
                subject_id=model.pk,
                data={"grants": count, "reason": reason},
            )
    return count


def access_requests_handle(
    *,
    model: Any,
    ids: list[int],
    status: str,
    reviewer: User,
    reason: str = "",
    may_reapply: bool = False,
) -> tuple[list[int], dict[int, str]]:
    """Bulk review, like the Hub's: `approved`, `rejected` or `pending` (cancel an approval) for
    each request of `model` in `ids`. Each is decided in its own transaction, so one refusal
    does not undo the others. Returns (handled ids, {refused id: why})."""
    _staff(reviewer, "review access requests")
    if status not in ("approved", "rejected", "pending"):
        raise DomainError("status must be approved, rejected or pending", code="invalid_status")
    found = {r.pk: r for r in AccessRequest.objects.filter(model=model, pk__in=ids)}
    handled: list[int] = []
    refused: dict[int, str] = {i: "no such request for this model" for i in ids if i not in found}
    for request_id, request in found.items():
        try:
            if status == "approved":
                access_request_approve(request=request, reviewer=reviewer)
            elif status == "rejected":
                access_request_reject(
                    request=request, reviewer=reviewer, reason=reason, may_reapply=may_reapply
                )
            else:
                access_request_cancel(request=request, reviewer=reviewer)
        except DomainError as error:
            refused[request_id] = error.message
        else:
            handled.append(request_id)
    return handled, refused


def grants_resume_for_model(*, model: Any, actor: User, reason: str) -> int:
    """Lift a withdrawal's suspension from a model's grants (revoked ones stay revoked)."""
    _staff(actor, "resume grants")
    if not reason.strip():
        raise DomainError("resuming grants needs a reason", code="reason_required")
    with transaction.atomic():
        count = Grant.objects.filter(model=model, suspended_at__isnull=False).update(
            suspended_at=None
        )
        audit_record(
            actor=actor,
            action="grant.resumed",
            subject_type="model",
            subject_id=model.pk,
            data={"grants": count, "reason": reason},
        )
    return count
