"""The licensing side of the admin console: the access-request review queue (answers visible,
decisions one by one or in bulk, CSV and JSON export of the filtered list, safe against CSV
injection), grant search and revocation, signing keys rotated and retired through the
services, and the audit chain check. Staff only."""

import csv
import io
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from licensing import access
from licensing.admin_console import csv_safe
from licensing.keys import signing_key_ensure
from licensing.models import AccessRequest, AuditEvent, Grant, SigningKey
from tests.factories import make_user
from tests.licensing.factories import gated_model, submit

pytestmark = pytest.mark.django_db

Status = AccessRequest.Status
FIELDS: list[dict[str, Any]] = [
    {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
    {"name": "use", "label": "Intended use", "type": "select", "options": ["research", "product"]},
]
REQUESTS = "/admin/licensing/accessrequest/"
GRANTS = "/admin/licensing/grant/"
KEYS = "/admin/licensing/signingkey/"
AUDIT = "/admin/licensing/auditevent/"


@pytest.fixture
def staff_client(client, admin_user):
    """Django's own list pages also need model permissions: an admin has them all."""
    client.force_login(admin_user)
    return client


@pytest.fixture
def queue(staff):
    """Two gated models; three requests on the first (one answer is a spreadsheet formula, one
    user name starts with '-'), one on the second, one of them approved."""
    llm = gated_model(actor=staff, fields=FIELDS)
    other = gated_model(actor=staff, fields=FIELDS, name="other")
    carol = make_user("carol")
    mallory = make_user("-mallory")
    dave = make_user("dave")
    requests = {
        "carol": submit(carol, llm, {"affiliation": "Univ. of Somewhere", "use": "research"}),
        "mallory": submit(
            mallory, llm, {"affiliation": '=HYPERLINK("http://evil.example","x")', "use": "product"}
        ),
        "dave": submit(dave, llm, {"affiliation": "@acme", "use": "research"}),
        "dave_other": submit(dave, other, {"affiliation": "+1 lab", "use": "research"}),
    }
    access.access_request_approve(request=requests["dave"], reviewer=staff)
    return llm, other, requests


def read_csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


# --- who may see it -------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_console_pages_refuse_non_staff(client, who, outsider, staff):
    key = signing_key_ensure(purpose="grants")
    if who == "outsider":
        client.force_login(outsider)

    gets = [
        f"{REQUESTS}export.csv",
        f"{REQUESTS}export.json",
        f"{KEYS}rotate/",
        f"{KEYS}{key.pk}/retire/",
        f"{AUDIT}verify/",
        f"{GRANTS}?q=x",
    ]
    for url in gets:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    retire = client.post(f"{KEYS}{key.pk}/retire/")
    rotate = client.post(f"{KEYS}rotate/", {"purpose": "grants", "curve": "P-256", "confirm": "on"})

    assert retire.status_code == rotate.status_code == 302
    assert SigningKey.objects.get().state == SigningKey.State.ACTIVE


def test_staff_without_the_models_permissions_are_refused(client, db):
    key = signing_key_ensure(purpose="grants")
    client.force_login(make_user("intern", is_staff=True))  # staff, but granted nothing

    for url in [
        f"{REQUESTS}export.csv",
        f"{KEYS}rotate/",
        f"{KEYS}{key.pk}/retire/",
        f"{AUDIT}verify/",
    ]:
        assert client.get(url).status_code == 403, url
    assert client.post(f"{KEYS}{key.pk}/retire/").status_code == 403
    assert SigningKey.objects.get().state == SigningKey.State.ACTIVE


def test_console_pages_render_for_staff(staff_client, queue):
    key = SigningKey.objects.filter(purpose="grants").get()
    for url in [
        REQUESTS,
        f"{REQUESTS}{queue[2]['carol'].pk}/change/",
        GRANTS,
        f"{GRANTS}{Grant.objects.get().pk}/change/",
        KEYS,
        f"{KEYS}rotate/",
        f"{KEYS}{key.pk}/retire/",
        AUDIT,
        f"{AUDIT}verify/",
    ]:
        assert staff_client.get(url).status_code == 200, url


# --- the review queue -------------------------------------------------------------------------


def test_review_queue_shows_answers_and_filters_by_model_and_status(staff_client, queue):
    llm, _, requests = queue

    pending = staff_client.get(REQUESTS, {"model__id__exact": llm.pk, "status__exact": "pending"})
    page = pending.content.decode()
    detail = staff_client.get(f"{REQUESTS}{requests['carol'].pk}/change/").content.decode()

    assert list(pending.context["cl"].queryset) == [requests["mallory"], requests["carol"]]
    assert "affiliation: Univ. of Somewhere; use: research" in page
    assert "<dt>Affiliation</dt><dd>Univ. of Somewhere</dd>" in detail
    assert "<dt>Intended use</dt><dd>research</dd>" in detail
    assert 'value="approve"' in detail  # decide this one from its page
    assert f'href="{REQUESTS}export.csv?model__id__exact={llm.pk}&amp;status__exact=pending"' in (
        page
    )


def test_approve_many_and_reject_with_a_reason_from_the_queue(staff_client, queue, admin_user):
    _, _, requests = queue
    carol, mallory = requests["carol"], requests["mallory"]

    staff_client.post(REQUESTS, {"action": "approve", "_selected_action": [carol.pk, mallory.pk]})
    assert AccessRequest.objects.get(pk=carol.pk).status == Status.APPROVED
    assert AccessRequest.objects.get(pk=mallory.pk).status == Status.APPROVED
    assert Grant.objects.filter(request__in=[carol, mallory], revoked_at__isnull=True).count() == 2

    asks = staff_client.post(REQUESTS, {"action": "reject", "_selected_action": [mallory.pk]})
    assert "reason" in asks.content.decode()
    assert AccessRequest.objects.get(pk=mallory.pk).status == Status.APPROVED
    staff_client.post(
        REQUESTS,
        {
            "action": "reject",
            "_selected_action": [mallory.pk],
            "reason": "not a research use",
            "may_reapply": "on",
        },
    )

    rejected = AccessRequest.objects.get(pk=mallory.pk)
    assert rejected.status == Status.REJECTED
    assert rejected.reason == "not a research use"
    assert rejected.may_reapply is True
    assert rejected.reviewer == admin_user
    assert not Grant.objects.filter(request=mallory, revoked_at__isnull=True).exists()


def test_a_refused_decision_is_shown(staff_client, queue):
    dave = queue[2]["dave"]  # already approved

    response = staff_client.post(
        REQUESTS, {"action": "approve", "_selected_action": [dave.pk]}, follow=True
    )

    assert "the request is approved, not pending" in response.content.decode()


def test_csv_export_is_the_filtered_list_with_answers_and_formulas_defused(staff_client, queue):
    llm, _, requests = queue

    response = staff_client.get(
        f"{REQUESTS}export.csv", {"model__id__exact": llm.pk, "status__exact": "pending"}
    )
    rows = read_csv(response)

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="access-requests-')
    assert [row["id"] for row in rows] == [str(requests["mallory"].pk), str(requests["carol"].pk)]
    mallory, carol = rows
    assert list(mallory)[-2:] == ["answer:affiliation", "answer:use"]  # the form's order
    assert mallory["answer:affiliation"] == '\'=HYPERLINK("http://evil.example","x")'
    assert mallory["user"] == "'-mallory"
    assert mallory["email"] == "'-mallory@example.com"
    assert carol["answer:affiliation"] == "Univ. of Somewhere"
    assert carol["model"] == "acme/tiny"
    assert carol["status"] == "pending"
    assert carol["license_sha256"] == requests["carol"].license_sha256


def test_csv_export_defuses_every_formula_trigger(staff_client, queue):
    everyone = read_csv(staff_client.get(f"{REQUESTS}export.csv"))

    affiliations = sorted(row["answer:affiliation"] for row in everyone)
    assert affiliations == sorted(
        [
            "Univ. of Somewhere",
            '\'=HYPERLINK("http://evil.example","x")',
            "'@acme",
            "'+1 lab",
        ]
    )
    for value in ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]:
        assert csv_safe(value) == "'" + value
    for value in ["", "plain", "a=b", " =1"]:
        assert csv_safe(value) == value


def test_json_export_is_the_filtered_list(staff_client, queue):
    llm, other, requests = queue

    response = staff_client.get(f"{REQUESTS}export.json", {"status__exact": "approved"})
    data = json.loads(response.content)
    searched = json.loads(staff_client.get(f"{REQUESTS}export.json", {"q": "other"}).content)

    assert response["Content-Disposition"].endswith('.json"')
    assert data["count"] == 1
    assert data["filters"] == {"status__exact": "approved"}
    [dave] = data["access_requests"]
    assert dave["id"] == requests["dave"].pk
    assert dave["user"] == "dave"
    assert dave["status"] == "approved"
    assert dave["reviewer"] == "staff"
    assert dave["answers"] == {"affiliation": "@acme", "use": "research"}  # JSON needs no quote
    assert dave["created_at"].endswith("+00:00")
    assert [r["model"] for r in searched["access_requests"]] == ["acme/other"]


def test_export_refuses_an_unknown_format_or_filter(staff_client, queue):
    assert staff_client.get(f"{REQUESTS}export.xlsx").status_code == 404
    assert staff_client.get(f"{REQUESTS}export.csv", {"nonsense__gt": 1}).status_code == 400


# --- grants -----------------------------------------------------------------------------------


def test_grants_are_found_by_user_model_and_grant_id(staff_client, queue, staff):
    _, _, requests = queue
    access.access_request_approve(request=requests["carol"], reviewer=staff)
    access.access_request_approve(request=requests["dave_other"], reviewer=staff)
    carol = Grant.objects.get(user__username="carol")
    dave_llm = Grant.objects.get(user__username="dave", model__name="tiny")

    def found(term):
        response = staff_client.get(GRANTS, {"q": term})
        return {grant.pk for grant in response.context["cl"].queryset}

    assert found("carol") == {carol.pk}
    assert found("carol@example.com") == {carol.pk}
    assert found(str(carol.jti)) == {carol.pk}
    assert found(str(carol.jti)[:8]) == {carol.pk}
    assert found("acme/tiny") == {carol.pk, dave_llm.pk}
    assert found("dave acme/tiny") == {dave_llm.pk}
    assert found("other") == {Grant.objects.get(model__name="other").pk}
    assert found("nobody") == set()


def test_revoke_asks_for_a_reason_and_revokes(staff_client, queue):
    grant = Grant.objects.get()

    asks = staff_client.post(GRANTS, {"action": "revoke", "_selected_action": [grant.pk]})
    assert "reason" in asks.content.decode()
    assert Grant.objects.get(pk=grant.pk).revoked_at is None

    done = staff_client.post(
        GRANTS,
        {"action": "revoke", "_selected_action": [grant.pk], "reason": "terms breached"},
        follow=True,
    )
    again = staff_client.post(
        GRANTS,
        {"action": "revoke", "_selected_action": [grant.pk], "reason": "twice"},
        follow=True,
    )

    revoked = Grant.objects.get(pk=grant.pk)
    assert revoked.revoked_at is not None
    assert revoked.revoked_reason == "terms breached"
    assert "1 grant(s) revoked." in done.content.decode()
    assert "the grant is already revoked" in again.content.decode()
    live = staff_client.get(GRANTS, {"state": "live"}).context["cl"].queryset
    assert grant.pk not in {g.pk for g in live}


# --- signing keys -----------------------------------------------------------------------------


def test_keys_page_shows_each_keys_state_and_live_grants(staff_client, queue):
    grants_key = SigningKey.objects.get(purpose="grants")

    response = staff_client.get(KEYS)
    by_kid = {key.kid: key for key in response.context["cl"].queryset}

    assert by_kid[grants_key.kid].live_grants == 1  # dave's
    assert by_kid[SigningKey.objects.get(purpose="models").kid].live_grants == 0
    page = response.content.decode()
    assert grants_key.kid in page
    assert f'href="{KEYS}rotate/"' in page
    assert f'href="{KEYS}{grants_key.pk}/retire/"' in page


def test_rotate_needs_the_confirmation_then_goes_through_the_service(staff_client, staff):
    old = signing_key_ensure(purpose="grants")

    form = staff_client.get(f"{KEYS}rotate/")
    unconfirmed = staff_client.post(f"{KEYS}rotate/", {"purpose": "grants", "curve": "P-256"})
    assert form.status_code == 200
    assert unconfirmed.status_code == 400
    assert SigningKey.objects.get().pk == old.pk

    done = staff_client.post(
        f"{KEYS}rotate/", {"purpose": "grants", "curve": "P-384", "confirm": "on"}, follow=True
    )

    new = SigningKey.objects.get(purpose="grants", state=SigningKey.State.ACTIVE)
    assert new.pk != old.pk
    assert new.algorithm == "ES384"
    assert SigningKey.objects.get(pk=old.pk).state == SigningKey.State.RETIRED
    assert f"{new.kid} now signs for grants." in done.content.decode()
    event = AuditEvent.objects.get(action="signing_key.rotated", subject_id=new.kid)
    assert event.actor == "admin"
    assert event.data["retired"] == [old.kid]


def test_retire_confirms_first_and_shows_the_services_refusal(staff_client):
    key = signing_key_ensure(purpose="grants")
    url = f"{KEYS}{key.pk}/retire/"

    confirm = staff_client.get(url)
    assert "nothing signs for grants until" in confirm.content.decode()
    assert SigningKey.objects.get(pk=key.pk).state == SigningKey.State.ACTIVE

    done = staff_client.post(url, follow=True)
    again = staff_client.post(url)

    assert SigningKey.objects.get(pk=key.pk).state == SigningKey.State.RETIRED
    assert "is retired" in done.content.decode()
    assert again.status_code == 409
    assert "is already retired" in again.content.decode()
    assert AuditEvent.objects.filter(action="signing_key.retired", actor="admin").count() == 1


def test_key_pages_need_post_with_csrf(staff):
    key = signing_key_ensure(purpose="grants")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)

    assert strict.post(f"{KEYS}{key.pk}/retire/").status_code == 403
    assert strict.post(f"{KEYS}rotate/", {"purpose": "grants", "confirm": "on"}).status_code == 403
    assert SigningKey.objects.get().state == SigningKey.State.ACTIVE


# --- the audit log ----------------------------------------------------------------------------


def test_audit_verify_shows_intact_then_the_first_tampered_event(staff_client, queue):
    intact = staff_client.get(f"{AUDIT}verify/").content.decode()
    total = AuditEvent.objects.count()
    victim = AuditEvent.objects.filter(action="access_request.approved").get()
    AuditEvent.objects.filter(pk=victim.pk).update(actor="someone-else")

    broken = staff_client.get(f"{AUDIT}verify/").content.decode()

    assert f"The chain is intact: all {total} events verified" in intact
    assert f"The chain is broken at event #{victim.pk}" in broken
    assert "its content does not match its hash" in broken
    assert f'href="{AUDIT}{victim.pk}/change/"' in broken


def test_audit_log_filters_by_action_actor_and_date(staff_client, queue):
    list_page = staff_client.get(AUDIT).content.decode()
    by_actor = staff_client.get(AUDIT, {"actor": "staff"}).context["cl"].queryset
    by_service = staff_client.get(AUDIT, {"actor": "-"}).context["cl"].queryset
    by_action = staff_client.get(AUDIT, {"action": "access_request.approved"}).context["cl"]

    assert f'href="{AUDIT}verify/"' in list_page
    assert by_actor.exists()
    assert {event.actor for event in by_actor} == {"staff"}
    assert {event.actor for event in by_service} == {""}
    assert by_action.queryset.count() == 1
    this_year = staff_client.get(AUDIT, {"created_at__year": timezone.now().year})
    long_ago = staff_client.get(AUDIT, {"created_at__year": 2001})
    assert this_year.context["cl"].queryset.count() == AuditEvent.objects.count()
    assert not long_ago.context["cl"].queryset.exists()
