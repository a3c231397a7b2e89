"""Reads of the licensing app."""

from dataclasses import dataclass

from licensing.audit_chain import GENESIS_HASH, event_hash
from licensing.models import AuditEvent


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
