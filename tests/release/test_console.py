"""The release console in the admin: one page per model with its timeline, what each unlock
still needs and the progress of a running one; every action goes through a confirmation page
and a service, and a service's refusal is shown. Staff only; writes only by POST with CSRF."""

import random
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from licensing.models import AuditEvent
from release import services
from release.charts import daily_bar_chart, nice_ceiling
from release.models import Artifact, DownloadDaily, Phase, ReleasePolicy, Unlock
from release.sample_weights import sample_model_files
from release.services.unlocks import unlock_advance, unlock_push_file
from tests.factories import make_release, make_user
from tests.staging import ingest_now

pytestmark = pytest.mark.django_db


def may_view_models(*users):
    """Like the Model admin, the console is for staff who may view models."""
    permission = Permission.objects.get(content_type__app_label="release", codename="view_model")
    for user in users:
        user.user_permissions.add(permission)


@pytest.fixture(autouse=True)
def _staff_may_view_models(staff):
    may_view_models(staff)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def approvers(db):
    people = make_user("alice", is_staff=True), make_user("bob", is_staff=True)
    may_view_models(*people)
    return people


def console(model):
    return f"/admin/release/model/{model.pk}/console/"


def schedule(version, actor, *, at=None, artifacts=("base",), target=Phase.GATED):
    return services.unlock_schedule(
        actor=actor,
        version=version,
        artifacts=list(artifacts),
        target_phase=target,
        not_before=at or datetime.now(UTC) + timedelta(days=2),
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def every_page(version, unlock, artifact):
    base = console(version.model)
    return [
        base,
        f"{base}progress/",
        f"{base}schedule/",
        f"{base}downloads/",
        f"{base}unlocks/{unlock.pk}/approve/",
        f"{base}unlocks/{unlock.pk}/reject/",
        f"{base}unlocks/{unlock.pk}/cancel/",
        f"{base}unlocks/{unlock.pk}/reschedule/",
        f"{base}artifacts/{artifact.pk}/withdraw/",
    ]


# --- who may see it ---------------------------------------------------------------------------


def test_every_console_page_renders_for_staff(staff_client, staff):
    version = make_release(artifacts={"base": Phase.PROPRIETARY, "tokenizer": Phase.OPEN})
    unlock = schedule(version, staff)
    artifact = version.artifacts.get(name="tokenizer")

    for url in every_page(version, unlock, artifact):
        response = staff_client.get(url)
        assert response.status_code == 200, url


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_console_refuses_non_staff_and_changes_nothing(client, who, outsider, staff):
    version = make_release(artifacts={"base": Phase.OPEN})
    version2 = make_release(name="other", artifacts={"base": Phase.PROPRIETARY})
    unlock = schedule(version2, staff)
    artifact = version.artifacts.get()
    if who == "outsider":
        client.force_login(outsider)

    for url in every_page(version2, unlock, artifact):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    withdraw = client.post(
        f"{console(version.model)}artifacts/{artifact.pk}/withdraw/",
        {"reason": "x", "confirm": "on"},
    )
    approve = client.post(f"{console(version2.model)}unlocks/{unlock.pk}/approve/", {})

    assert withdraw.status_code == approve.status_code == 302
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.OPEN
    assert not unlock.approvals.exists()


def test_staff_without_the_permission_to_view_models_are_refused(client, staff):
    version = make_release()
    unlock = schedule(version, staff)
    intern = make_user("intern", is_staff=True)
    client.force_login(intern)

    for url in every_page(version, unlock, version.artifacts.get()):
        assert client.get(url).status_code == 403, url
    assert client.post(f"{console(version.model)}unlocks/{unlock.pk}/approve/").status_code == 403
    assert not unlock.approvals.exists()


def test_model_list_and_page_link_to_the_console(staff_client, admin_user):
    version = make_release()
    staff_client.force_login(admin_user)

    listing = staff_client.get("/admin/release/model/").content.decode()
    page = staff_client.get(f"/admin/release/model/{version.model.pk}/change/").content.decode()

    assert f'href="{console(version.model)}"' in listing
    assert f'href="{console(version.model)}"' in page


def test_a_get_changes_nothing_and_a_post_needs_the_csrf_token(staff, approvers):
    version = make_release()
    unlock = schedule(version, staff)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(approvers[0])
    url = f"{console(version.model)}unlocks/{unlock.pk}/approve/"

    page = strict.get(url)
    forged = strict.post(url, {})

    assert page.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    assert forged.status_code == 403
    assert not unlock.approvals.exists()


# --- scheduling -------------------------------------------------------------------------------


def test_schedule_reads_the_time_in_time_zone_and_needs_the_confirmation(
    staff_client, staff, settings
):
    settings.TIME_ZONE = "Europe/Paris"
    version = make_release(artifacts={"base": Phase.PROPRIETARY, "tokenizer": Phase.PROPRIETARY})
    base = version.artifacts.get(name="base")
    form = {
        "version": version.pk,
        "artifacts": [base.pk],
        "target_phase": "gated",
        "not_before": "2030-01-15T09:00",
    }
    url = f"{console(version.model)}schedule/"

    unconfirmed = staff_client.post(url, form)
    assert unconfirmed.status_code == 400
    assert not Unlock.objects.exists()

    done = staff_client.post(url, {**form, "confirm": "on"}, follow=True)

    unlock = Unlock.objects.get()
    assert unlock.not_before == datetime(2030, 1, 15, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    assert unlock.created_by == staff
    assert list(unlock.artifacts.all()) == [base]
    assert any("scheduled" in m for m in messages_of(done))
    page = done.content.decode()
    assert "Europe/Paris" in page
    assert "2030-01-15 09:00 CET" in page
    assert "2 more approvals needed" in page


def test_schedule_refuses_artifacts_of_another_version(staff_client):
    v1 = make_release(version="v1")
    v2 = make_release(version="v2")
    response = staff_client.post(
        f"{console(v1.model)}schedule/",
        {
            "version": v1.pk,
            "artifacts": [v2.artifacts.get().pk],
            "target_phase": "gated",
            "not_before": "2030-01-15T09:00",
            "confirm": "on",
        },
    )

    assert response.status_code == 400
    assert "not part of version v1: base" in response.content.decode()
    assert not Unlock.objects.exists()


def test_schedule_shows_the_service_refusal(staff_client, staff):
    version = make_release()
    schedule(version, staff)

    response = staff_client.post(
        f"{console(version.model)}schedule/",
        {
            "version": version.pk,
            "artifacts": [version.artifacts.get().pk],
            "target_phase": "open",
            "not_before": "2030-01-15T09:00",
            "confirm": "on",
        },
    )

    assert response.status_code == 409
    assert any("already covers some of these artifacts" in m for m in messages_of(response))
    assert Unlock.objects.count() == 1


# --- approving, rejecting, cancelling, rescheduling ---------------------------------------------


def test_self_approval_is_refused_with_the_services_message(staff_client, staff):
    version = make_release()
    unlock = schedule(version, staff)

    response = staff_client.post(f"{console(version.model)}unlocks/{unlock.pk}/approve/", {})

    assert response.status_code == 409
    assert any("someone else must approve it" in m for m in messages_of(response))
    assert not unlock.approvals.exists()


def test_approvals_show_what_is_missing_until_scheduled(client, staff, approvers):
    version = make_release()
    ReleasePolicy.objects.create(
        model=version.model, required_approvals=2, required_roles=["legal"]
    )
    legal = Group.objects.create(name="legal")
    alice, bob = approvers
    bob.groups.add(legal)
    unlock = schedule(version, staff)
    url = f"{console(version.model)}unlocks/{unlock.pk}/approve/"

    client.force_login(alice)
    refused = client.post(url, {"comment": "looks good"})
    assert any("needs one of the roles legal" in m for m in messages_of(refused))

    alice.groups.add(legal)
    client.post(url, {"comment": "looks good"})
    page = client.get(console(version.model)).content.decode()
    assert "1 of 2: alice" in page
    assert "1 more approval needed" in page

    client.force_login(bob)
    done = client.post(url, {}, follow=True)

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.SCHEDULED
    assert any("approved" in m for m in messages_of(done))
    assert "more approval" not in done.content.decode()


def test_reject_needs_a_reason_and_then_cancels(client, staff, approvers):
    version = make_release()
    unlock = schedule(version, staff)
    client.force_login(approvers[0])
    url = f"{console(version.model)}unlocks/{unlock.pk}/reject/"

    blank = client.post(url, {"reason": "  "})
    assert any("a rejection needs a reason" in m for m in messages_of(blank))
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.AWAITING_APPROVAL

    client.post(url, {"reason": "legal has not signed off"})
    rejected = Unlock.objects.get(pk=unlock.pk)
    assert rejected.state == Unlock.State.CANCELLED
    assert "legal has not signed off" in rejected.reason


def test_reschedule_moves_the_time_and_clears_approvals(client, staff, approvers, settings):
    settings.TIME_ZONE = "UTC"
    version = make_release()
    unlock = schedule(version, staff)
    services.unlock_approve(unlock=unlock, approver=approvers[0])
    client.force_login(staff)
    url = f"{console(version.model)}unlocks/{unlock.pk}/reschedule/"

    form = client.get(url).content.decode()
    assert 'type="datetime-local"' in form
    client.post(url, {"not_before": "2031-03-01T12:30"})

    moved = Unlock.objects.get(pk=unlock.pk)
    assert moved.not_before == datetime(2031, 3, 1, 12, 30, tzinfo=UTC)
    assert not moved.approvals.exists()


def test_cancel_needs_a_reason_and_a_finished_unlock_cannot_be_cancelled(staff_client, staff):
    version = make_release()
    unlock = schedule(version, staff)
    url = f"{console(version.model)}unlocks/{unlock.pk}/cancel/"

    blank = staff_client.post(url, {"reason": ""})
    assert any("a cancellation needs a reason" in m for m in messages_of(blank))
    staff_client.post(url, {"reason": "postponed to the next quarter"})
    again = staff_client.post(url, {"reason": "again"})

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.CANCELLED
    assert any("is already cancelled" in m for m in messages_of(again))
    page = staff_client.get(console(version.model)).content.decode()
    assert "postponed to the next quarter" in page  # in the finished unlocks and the history


def test_an_unknown_action_or_another_models_unlock_is_not_found(staff_client, staff):
    version = make_release()
    other = make_release(name="other")
    unlock = schedule(other, staff)

    assert (
        staff_client.get(f"{console(version.model)}unlocks/{unlock.pk}/approve/").status_code == 404
    )
    assert staff_client.get(f"{console(other.model)}unlocks/{unlock.pk}/flip/").status_code == 404


# --- withdrawing --------------------------------------------------------------------------------


def test_withdraw_without_a_reason_is_refused(staff_client):
    version = make_release(artifacts={"base": Phase.OPEN})
    artifact = version.artifacts.get()
    url = f"{console(version.model)}artifacts/{artifact.pk}/withdraw/"

    unconfirmed = staff_client.post(url, {"reason": "leaked eval set"})
    no_reason = staff_client.post(url, {"reason": "", "confirm": "on"})

    assert unconfirmed.status_code == 400
    assert no_reason.status_code == 400
    assert any("a withdrawal needs a reason" in m for m in messages_of(no_reason))
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.OPEN


def test_withdraw_stops_serving_cancels_unlocks_and_says_so(staff_client, staff):
    version = make_release(artifacts={"base": Phase.PROPRIETARY})
    artifact = version.artifacts.get()
    unlock = schedule(version, staff)
    url = f"{console(version.model)}artifacts/{artifact.pk}/withdraw/"

    warning = staff_client.get(url).content.decode()
    done = staff_client.post(url, {"reason": "license violation", "confirm": "on"}, follow=True)
    again = staff_client.post(url, {"reason": "again", "confirm": "on"})

    assert "cancels 1 live unlock(s)" in warning
    assert Artifact.objects.get(pk=artifact.pk).phase == Phase.WITHDRAWN
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.CANCELLED
    assert any("is withdrawn" in m for m in messages_of(done))
    assert any("stays withdrawn" in m for m in messages_of(again))
    assert "base: proprietary → withdrawn: license violation" in done.content.decode()


# --- a running unlock ---------------------------------------------------------------------------


def test_console_follows_a_running_unlock_until_it_flips(staff_client, staff):
    """Given an unlock due now with no approvals needed, when its files are pushed one by one,
    the console shows the bytes moving and asks to be refreshed, and after the flip shows the
    new phase in the timeline."""
    files = sample_model_files(seed=random.randrange(1 << 30))  # blobs outlive the test
    version, _ = ingest_now(name="console", artifacts={"base": files})
    ReleasePolicy.objects.create(model=version.model, required_approvals=0)
    due = timezone.now() + timedelta(minutes=1)
    unlock = schedule(version, staff, at=due)
    progress_url = f"{console(version.model)}progress/"
    assert unlock.state == Unlock.State.SCHEDULED

    unlock_advance(unlock_id=unlock.pk)  # claims it and creates a push per file
    staging = staff_client.get(console(version.model)).content.decode()
    before = staff_client.get(progress_url).json()
    first, *rest = unlock.files.values_list("pk", flat=True)
    unlock_push_file(unlock_file_id=first)
    during = staff_client.get(progress_url).json()
    for row_id in rest:
        unlock_push_file(unlock_file_id=row_id)
    unlock_advance(unlock_id=unlock.pk, now=due + timedelta(seconds=1))
    done = staff_client.get(console(version.model)).content.decode()
    after = staff_client.get(progress_url).json()

    assert 'data-progress-url="' in staging
    assert f'<progress id="progress-{unlock.pk}"' in staging
    assert before["running"] is True
    assert before["unlocks"][0]["state"] == "staging"
    assert before["unlocks"][0]["files_done"] == 0
    assert during["unlocks"][0]["files_done"] == 1
    assert 0 < during["unlocks"][0]["bytes_done"] < during["unlocks"][0]["bytes_total"]
    assert after == {"running": False, "unlocks": []}
    assert "data-progress-url" not in done
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE
    assert "v1:base: proprietary → gated" in done
    assert f"unlock #{unlock.pk} done" in done


def test_timeline_shows_what_is_coming(staff_client, staff, settings):
    settings.UNLOCK_PRESTAGE_LEAD_HOURS = 24
    version = make_release()
    at = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    unlock = schedule(version, staff, at=at)

    page = staff_client.get(console(version.model)).content.decode()

    coming = page.split('id="coming-heading"')[1].split('id="history-heading"')[0]
    assert f"unlock #{unlock.pk} (base): pre-staging starts" in coming
    assert f"unlock #{unlock.pk} (base): flips to gated if approved by then" in coming
    assert coming.index("2031-05-31 12:00") < coming.index("2031-06-01 12:00")
    assert f"unlock #{unlock.pk} scheduled: base → gated" in page


# --- downloads ----------------------------------------------------------------------------------


def test_downloads_chart_has_one_bar_per_day_with_data(staff_client):
    version = make_release()
    model = version.model
    today = timezone.now().astimezone(UTC).date()
    for day, name, count in [
        (today, "v1", 5),
        (today, "v2", 3),
        (today - timedelta(days=3), "v1", 7),
        (today - timedelta(days=10), "v2", 1),
        (today - timedelta(days=45), "v1", 100),  # outside the default 30 days
    ]:
        DownloadDaily.objects.create(model=model, version=name, day=day, count=count)
    url = f"{console(model)}downloads/"

    page = staff_client.get(url).content.decode()
    only_v1 = staff_client.get(url, {"version": "v1", "days": 90}).content.decode()

    assert page.count('<rect class="wg-bar"') == 3
    assert f"{today.isoformat()}: 8 downloads" in page  # both versions that day
    assert re.search(rf"{today.isoformat()}</time></th><td class=\"wg-num\">8</td>", page)
    assert "16 downloads" in page  # 8 + 7 + 1
    assert 'role="img"' in page
    assert "<caption>Downloads per day" in page
    assert only_v1.count('<rect class="wg-bar"') == 3  # today, 3 days ago, 45 days ago
    assert "112 downloads" in only_v1


def test_chart_bars_scale_to_a_round_ceiling():
    start = date(2030, 1, 1)
    chart = daily_bar_chart(
        counts={start: 4, date(2030, 1, 3): 8, date(2030, 1, 2): 0},
        start=start,
        end=date(2030, 1, 10),
    )

    assert [nice_ceiling(n) for n in (0, 1, 8, 11, 60, 101)] == [1, 1, 10, 20, 100, 200]
    assert [bar.day for bar in chart.bars] == [start, date(2030, 1, 3)]  # no bar for zero
    assert chart.bars[1].height == pytest.approx(2 * chart.bars[0].height)
    assert chart.bars[1].height == pytest.approx(chart.plot_height * 0.8)
    assert chart.bars[0].y + chart.bars[0].height == pytest.approx(chart.baseline)
    assert [tick.label for tick in chart.value_ticks] == ["0", "5", "10"]


def test_reading_console_pages_writes_nothing(staff_client, staff):
    version = make_release()
    schedule(version, staff)
    events = AuditEvent.objects.count()

    for url in [console(version.model), f"{console(version.model)}downloads/"]:
        staff_client.get(url)

    assert AuditEvent.objects.count() == events
