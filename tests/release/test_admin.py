"""The admin shows the catalog, changes it only through services and flags stopped workers."""

from datetime import timedelta

import pytest
from django.utils import timezone

from release import services
from release.models import Artifact, Heartbeat, Model, Phase
from tests.factories import make_release


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
def test_admin_lists_models_and_shows_a_sealed_version_read_only(admin_client_):
    version = make_release()

    listing = admin_client_.get("/admin/release/model/")
    page = admin_client_.get(f"/admin/release/version/{version.pk}/change/")
    post = admin_client_.post(f"/admin/release/version/{version.pk}/change/", {"name": "v9"})

    assert "acme/tiny" in listing.content.decode()
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert post.status_code == 403


@pytest.mark.django_db
def test_admin_creates_a_model_through_the_service(admin_client_):
    response = admin_client_.post(
        "/admin/release/model/add/",
        {
            "org": "acme",
            "name": "new",
            "title": "New",
            "card": "",
            "versions-TOTAL_FORMS": 0,
            "versions-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 302
    assert Model.objects.filter(org="acme", name="new").exists()
    from licensing.models import AuditEvent

    assert AuditEvent.objects.filter(action="model.created", actor="admin").exists()


@pytest.mark.django_db
def test_admin_offers_no_shortcut_around_approved_unlocks(admin_client_):
    """Phases move forward only through unlocks (approved, pushed, verified)."""
    artifact = make_release().artifacts.get()

    response = admin_client_.post(
        "/admin/release/artifact/", {"action": "make_open", "_selected_action": [artifact.pk]}
    )

    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.PROPRIETARY
    assert response.status_code == 302  # Django ignores an unknown action
    page = admin_client_.get("/admin/release/artifact/").content.decode()
    assert 'value="withdraw"' in page
    assert 'value="make_open"' not in page


@pytest.mark.django_db
def test_admin_withdraw_asks_for_a_reason_first(admin_client_):
    artifact = make_release(artifacts={"base": Phase.OPEN}).artifacts.get()

    form = admin_client_.post(
        "/admin/release/artifact/", {"action": "withdraw", "_selected_action": [artifact.pk]}
    )
    assert form.status_code == 200
    assert "reason" in form.content.decode()
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.OPEN

    admin_client_.post(
        "/admin/release/artifact/",
        {"action": "withdraw", "_selected_action": [artifact.pk], "reason": "license violation"},
    )
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.WITHDRAWN


@pytest.mark.django_db
def test_admin_banner_says_workers_are_down_without_a_recent_heartbeat(admin_client_):
    never = admin_client_.get("/admin/").content.decode()
    Heartbeat.objects.create(
        name="celery", worker="w1", last_seen=timezone.now() - timedelta(minutes=5)
    )
    stale = admin_client_.get("/admin/").content.decode()
    services.heartbeat_record(worker="celery@w2")
    fresh = admin_client_.get("/admin/").content.decode()

    assert "no heartbeat has ever been recorded" in never
    assert "Background workers are not running" in stale
    assert "last heartbeat" in fresh
    assert "celery@w2" in fresh
    assert "not running" not in fresh


@pytest.mark.django_db
def test_non_staff_cannot_open_the_admin(client, outsider):
    client.force_login(outsider)

    response = client.get("/admin/release/model/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_admin_banner_names_a_failed_unlock(admin_client_, admin_user):
    from datetime import UTC, datetime

    from release.models import Unlock

    version = make_release()
    unlock = Unlock.objects.create(
        version=version,
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC),
        required_approvals=0,
        created_by=admin_user,
        state=Unlock.State.FAILED,
        reason="weights.bin: staging object has sha256 00ff",
    )

    page = admin_client_.get("/admin/").content.decode()

    assert f"unlock #{unlock.pk}" in page
    assert "staging object has sha256 00ff" in page


@pytest.mark.django_db
def test_admin_schedules_and_approves_unlocks_through_services(admin_client_, admin_user):
    from release.models import Unlock
    from tests.factories import make_user

    version = make_release()
    artifact = version.artifacts.get()
    response = admin_client_.post(
        "/admin/release/unlock/add/",
        {
            "version": version.pk,
            "artifacts": [artifact.pk],
            "target_phase": "gated",
            "not_before_0": "2030-01-01",
            "not_before_1": "09:00:00",
            "approvals-TOTAL_FORMS": 0,
            "approvals-INITIAL_FORMS": 0,
            "files-TOTAL_FORMS": 0,
            "files-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    unlock = Unlock.objects.get()
    assert unlock.created_by == admin_user
    assert list(unlock.artifacts.all()) == [artifact]

    own = admin_client_.post(
        "/admin/release/unlock/",
        {"action": "approve", "_selected_action": [unlock.pk]},
        follow=True,
    )
    assert "someone else must approve it" in own.content.decode()

    other = make_user("reviewer", is_staff=True, is_superuser=True)
    admin_client_.force_login(other)
    admin_client_.post(
        "/admin/release/unlock/", {"action": "approve", "_selected_action": [unlock.pk]}
    )
    assert unlock.approvals.count() == 1

    admin_client_.post(
        "/admin/release/unlock/",
        {"action": "cancel", "_selected_action": [unlock.pk], "reason": "hold"},
    )
    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.CANCELLED
    assert unlock.reason == "hold"


@pytest.mark.django_db
def test_admin_refused_ingest_shows_the_report(admin_client_):
    from release.models import IngestJob
    from release.services import model_create

    model = model_create(actor=None, org="acme", name="x")
    response = admin_client_.post(
        "/admin/release/ingestjob/add/",
        {
            "model": model.pk,
            "version_name": "v1",
            "sources_text": "base=s3://weightgate-staging/tests/nothing-here/",
            "files-TOTAL_FORMS": 0,
            "files-INITIAL_FORMS": 0,
        },
        follow=True,
    )

    assert "no files under" in response.content.decode()
    assert not IngestJob.objects.exists()
