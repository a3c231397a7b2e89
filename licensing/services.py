"""Writes of the licensing app. For now: the audit log every other service appends to."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from licensing.audit_chain import GENESIS_HASH, event_hash
from licensing.models import AuditEvent

# Any fixed 64-bit key: every audit append in the cluster serialises on it.
_AUDIT_LOCK_KEY = 0x5747_4155_4449_54  # "WGAUDIT"


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    subject_type: str,
    subject_id: str | int,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an event to the chain, inside the caller's transaction.

    The advisory lock serialises appends so two transactions cannot both link to the same
    previous event; it is released at commit, so a rolled-back change leaves no event behind.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_LOCK_KEY])
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event = AuditEvent(
            created_at=timezone.now(),
            actor_id=actor.pk if actor is not None and actor.is_authenticated else None,
            actor=actor.get_username() if actor is not None and actor.is_authenticated else "",
            action=action,
            subject_type=subject_type,
            subject_id=str(subject_id),
            data=data or {},
            prev_hash=last or GENESIS_HASH,
        )
        event.hash = event_hash(event)
        event.save(force_insert=True)
        return event
