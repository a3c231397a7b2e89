"""Reads of the licensing app."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from licensing import read_cache
from licensing.audit_chain import GENESIS_HASH, event_hash
from licensing.models import (
    AccessRequest,
    AuditEvent,
    DownloadToken,
    GatePolicy,
    Grant,
    SigningKey,
)


@dataclass(frozen=True)
class AuditChainReport:
    checked: int
    broken_at: int | None = None  # id of the first event that does not verify
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def audit_chain_verify() -> AuditChainReport:
    """Recompute every event's hash in order and check each links to the one before it."""
    expected_prev = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != expected_prev:
            return AuditChainReport(
                checked,
                event.pk,
                "its previous-hash does not match the event before it "
                "(an event was inserted, deleted or reordered)",
            )
        if event_hash(event) != event.hash:
            return AuditChainReport(checked, event.pk, "its content does not match its hash")
        expected_prev = event.hash
        checked += 1
    return AuditChainReport(checked)


# --- Grants, keys and revocations --------------------------------------------------------------


def grant_live_for(*, user: Any, model_id: int, now: datetime | None = None) -> Grant | None:
    """The grant that lets `user` use `model` now: not revoked, not suspended, not expired, and
    for the license version the model requires today (a new version must be accepted anew).
    This is the one answer to "does this person hold access?"."""
    if not user.is_authenticated:
        return None
    now = now or timezone.now()
    # One query: no policy, or a policy without a license, makes the subquery NULL, which no
    # grant's license equals.
    required = GatePolicy.objects.filter(model_id=model_id).values("license_id")
    return (
        Grant.objects.filter(
            user_id=user.pk,
            model_id=model_id,
            revoked_at__isnull=True,
            suspended_at__isnull=True,
            license_id=Subquery(required),
        )
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-issued_at")
        .first()
    )


def grant_live_for_remembered(*, user: Any, model_id: int) -> Grant | None:
    """`grant_live_for` now, for the download path that asks it on every request: the answer is
    remembered (`licensing.read_cache`) until a change is announced, so a revocation, a
    suspension or a new license version takes effect within a second everywhere, and on the very
    next request in the process that made it. A remembered grant that has expired since is never
    returned."""
    if not user.is_authenticated:
        return None
    grant = read_cache.remembered(
        ("grant", user.pk, model_id), lambda: grant_live_for(user=user, model_id=model_id)
    )
    if grant is not None and grant.expires_at is not None and grant.expires_at <= timezone.now():
        return grant_live_for(user=user, model_id=model_id)
    return grant


def grant_signing_keys(*, now: datetime | None = None) -> list[SigningKey]:
    """Keys in the JWKS: the active grant key, and every retired one that still has a grant
    which is neither revoked nor expired (so rotation never breaks an outstanding grant)."""
    now = now or timezone.now()
    live_kids = (
        Grant.objects.filter(revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values("kid")
    )
    return list(
        SigningKey.objects.filter(purpose=SigningKey.Purpose.GRANTS)
        .filter(Q(state=SigningKey.State.ACTIVE) | Q(kid__in=live_kids))
        .order_by("-created_at")
    )


def signing_keys_with_live_grants(*, now: datetime | None = None) -> QuerySet[SigningKey]:
    """Signing keys, each annotated with `live_grants`: how many grants it signed that are
    neither revoked nor expired (suspended ones count: they may be resumed). The same rule as
    `grant_signing_keys`, so a retired key with live grants is exactly one still in the JWKS."""
    now = now or timezone.now()
    live = (
        Grant.objects.filter(kid=OuterRef("kid"), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by()
        .values("kid")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return SigningKey.objects.annotate(
        live_grants=Coalesce(Subquery(live, output_field=IntegerField()), 0)
    )


def revoked_grant_ids(*, now: datetime | None = None) -> list[str]:
    """Revoked grants that would otherwise still be valid (expired ones need no listing)."""
    now = now or timezone.now()
    return [
        str(jti)
        for jti in Grant.objects.filter(revoked_at__isnull=False)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values_list("jti", flat=True)
    ]


def access_requests_for_review(*, model_id: int, status: str) -> QuerySet[AccessRequest]:
    return (
        AccessRequest.objects.filter(model_id=model_id, status=status)
        .select_related("user", "license", "reviewer")
        .order_by("created_at", "id")
    )


def partner_may_see_proprietary(*, user: Any, model_id: int) -> bool:
    """A member of a partner organisation named by the model's gate policy."""
    if not user.is_authenticated or not user.is_active:
        return False
    return GatePolicy.objects.filter(model_id=model_id, partners__members=user).exists()


# --- A developer's own requests, grants and tokens (the portal) -------------------------------
# Every read is filtered by the owner: no one sees another person's requests, grants or tokens.


def access_requests_of(*, user: Any) -> QuerySet[AccessRequest]:
    return (
        AccessRequest.objects.filter(user_id=user.pk)
        .select_related("model", "license")
        .prefetch_related("grants")
        .order_by("-created_at", "-id")
    )


def access_request_latest(*, user: Any, model_id: int) -> AccessRequest | None:
    """The person's most recent request for a model: what their status page shows."""
    return access_requests_of(user=user).filter(model_id=model_id).first()


def grants_of(*, user: Any) -> QuerySet[Grant]:
    return Grant.objects.filter(user_id=user.pk).select_related("model", "license")


def tokens_of(*, user: Any) -> QuerySet[DownloadToken]:
    return DownloadToken.objects.filter(user_id=user.pk).order_by("-created_at", "-id")
