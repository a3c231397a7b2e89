"""Every write of the release app, one module per concern; import from here."""

from release.services.catalog import (
    PHASE_TRANSITIONS,
    artifact_create,
    artifact_set_phase,
    file_add,
    heartbeat_record,
    model_create,
    version_create,
    version_seal,
)
from release.services.ingest import (
    ingest_file_hash,
    ingest_finalize,
    ingest_start,
    ingests_resume,
)
from release.services.unlocks import (
    artifact_withdraw,
    unlock_approve,
    unlock_cancel,
    unlock_flip,
    unlock_reject,
    unlock_reschedule,
    unlock_schedule,
    unlocks_tick,
)

__all__ = [
    "PHASE_TRANSITIONS",
    "artifact_create",
    "artifact_set_phase",
    "artifact_withdraw",
    "file_add",
    "heartbeat_record",
    "ingest_file_hash",
    "ingests_resume",
    "ingest_finalize",
    "ingest_start",
    "model_create",
    "unlock_approve",
    "unlock_cancel",
    "unlock_flip",
    "unlock_reject",
    "unlock_reschedule",
    "unlock_schedule",
    "unlocks_tick",
    "version_create",
    "version_seal",
]
