"""The phase state machine: forward only, withdrawal from anywhere, every change audited."""

import itertools

import pytest

from config.errors import DomainError, NotAllowed
from licensing.models import AuditEvent
from release import services
from release.models import Artifact, Phase
from tests.factories import make_release

ALLOWED = {
    (Phase.PROPRIETARY, Phase.GATED),
    (Phase.PROPRIETARY, Phase.OPEN),
    (Phase.PROPRIETARY, Phase.WITHDRAWN),
    (Phase.GATED, Phase.OPEN),
    (Phase.GATED, Phase.WITHDRAWN),
    (Phase.OPEN, Phase.WITHDRAWN),
}
ALL_PAIRS = list(itertools.product(Phase.values, repeat=2))


def artifact_in(phase: str) -> Artifact:
    version = make_release(artifacts={"base": phase})
    return version.artifacts.get()


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "target"), sorted(ALLOWED))
def test_allowed_transition_changes_phase_and_audits(start, target, staff):
    artifact = artifact_in(start)

    moved = services.artifact_set_phase(
        actor=staff, artifact=artifact, phase=target, reason="security issue found"
    )

    assert moved.phase == target
    assert Artifact.objects.get(pk=artifact.pk).phase == target
    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None
    assert event.action == "artifact.phase_changed"
    assert event.actor == "staff"
    assert event.data["from"] == start
    assert event.data["to"] == target


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "target"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_refused_transition_changes_nothing(start, target, staff):
    artifact = artifact_in(start)
    events_before = AuditEvent.objects.count()

    with pytest.raises(NotAllowed) as refused:
        services.artifact_set_phase(actor=staff, artifact=artifact, phase=target, reason="x")

    assert refused.value.code == "phase_transition_refused"
    assert f"from {start} to {target}" in refused.value.message
    assert Artifact.objects.get(pk=artifact.pk).phase == start
    assert AuditEvent.objects.count() == events_before


@pytest.mark.django_db
def test_withdrawal_requires_a_reason(staff):
    artifact = artifact_in(Phase.OPEN)

    with pytest.raises(DomainError) as refused:
        services.artifact_set_phase(
            actor=staff, artifact=artifact, phase=Phase.WITHDRAWN, reason="   "
        )

    assert refused.value.code == "reason_required"
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.OPEN


@pytest.mark.django_db
def test_unknown_phase_is_refused(staff):
    artifact = artifact_in(Phase.PROPRIETARY)

    with pytest.raises(DomainError) as refused:
        services.artifact_set_phase(actor=staff, artifact=artifact, phase="public")

    assert refused.value.code == "invalid_phase"


@pytest.mark.django_db
def test_unsealed_version_cannot_leave_proprietary(staff):
    version = make_release(seal=False)
    artifact = version.artifacts.get()

    with pytest.raises(NotAllowed) as refused:
        services.artifact_set_phase(actor=staff, artifact=artifact, phase=Phase.GATED)

    assert refused.value.code == "version_unsealed"
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.PROPRIETARY


@pytest.mark.django_db
def test_unsealed_version_can_still_be_withdrawn(staff):
    artifact = make_release(seal=False).artifacts.get()

    moved = services.artifact_set_phase(
        actor=staff, artifact=artifact, phase=Phase.WITHDRAWN, reason="leaked credentials in config"
    )

    assert moved.phase == Phase.WITHDRAWN
