"""The audit log is a hash chain: any edit, insertion or deletion is found by verify_audit."""

import pytest
from django.core.management import CommandError, call_command

from licensing.audit_chain import GENESIS_HASH
from licensing.models import AuditEvent
from licensing.selectors import audit_chain_verify
from licensing.services import audit_record


def record_three(actor=None) -> list[AuditEvent]:
    return [
        audit_record(
            actor=actor,
            action=f"test.step{n}",
            subject_type="thing",
            subject_id=n,
            data={"n": n, "note": "héllo"},
        )
        for n in range(3)
    ]


@pytest.mark.django_db
def test_events_link_to_their_predecessor(staff):
    first, second, third = record_three(staff)

    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert first.actor == "staff"
    assert first.actor_id == staff.pk
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_verify_audit_command_reports_an_intact_chain(capsys):
    record_three()

    call_command("verify_audit")

    assert "3 events verified" in capsys.readouterr().out


@pytest.mark.django_db
def test_verify_audit_detects_an_edited_event():
    _, second, _ = record_three()
    AuditEvent.objects.filter(pk=second.pk).update(data={"n": 99, "note": "héllo"})

    with pytest.raises(CommandError, match=rf"broken at event #{second.pk}: its content"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_verify_audit_detects_an_edited_actor():
    first, _, _ = record_three()
    AuditEvent.objects.filter(pk=first.pk).update(actor="someone-else")

    report = audit_chain_verify()

    assert not report.ok
    assert report.broken_at == first.pk


@pytest.mark.django_db
def test_verify_audit_detects_a_deleted_event():
    _, second, third = record_three()
    AuditEvent.objects.filter(pk=second.pk).delete()

    report = audit_chain_verify()

    assert report.broken_at == third.pk
    assert "inserted, deleted or reordered" in report.reason


@pytest.mark.django_db
def test_verify_audit_detects_a_rehashed_forgery():
    """Re-computing a forged event's own hash is not enough: the next event still points at the
    original."""
    first, second, _ = record_three()
    forged = AuditEvent.objects.get(pk=first.pk)
    forged.data = {"n": 42}
    from licensing.audit_chain import event_hash

    forged.hash = event_hash(forged)
    forged.save()

    assert audit_chain_verify().broken_at == second.pk
