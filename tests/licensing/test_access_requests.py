"""Access requests: every allowed and every refused transition of the state machine, who may make
each one, and the database invariants that hold when approvals race."""

import threading
from collections.abc import Callable

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from licensing import access
from licensing.models import AccessRequest, AuditEvent, GatePolicy, Grant
from licensing.selectors import grant_live_for
from release.models import Phase
from tests.factories import make_release, make_user
from tests.licensing.factories import current_license, gated_model, make_license, submit

Status = AccessRequest.Status


@pytest.fixture
def model(staff):
    return gated_model(actor=staff)


@pytest.fixture
def pending(model, outsider):
    return submit(outsider, model)


@pytest.fixture
def approved(pending, staff):
    return access.access_request_approve(request=pending, reviewer=staff)


def live_grants(request):
    return Grant.objects.filter(request=request, revoked_at__isnull=True)


def status_of(request):
    return AccessRequest.objects.get(pk=request.pk).status


# --- submit ------------------------------------------------------------------------------------


def test_manual_mode_request_waits_for_review(model, outsider):
    request = submit(outsider, model)

    assert request.status == Status.PENDING
    assert request.license == current_license(model)
    assert request.license_sha256 == current_license(model).text_sha256
    assert not Grant.objects.exists()
    assert grant_live_for(user=outsider, model_id=model.pk) is None
    assert AuditEvent.objects.filter(
        action="access_request.created", subject_id=str(request.pk)
    ).exists()


def test_auto_mode_approves_at_once_and_issues_a_grant(staff, outsider):
    model = gated_model(actor=staff, mode="auto")

    request = submit(outsider, model)

    assert request.status == Status.APPROVED
    assert request.reviewer is None
    assert request.decided_at is not None
    grant = live_grants(request).get()
    assert grant_live_for(user=outsider, model_id=model.pk) == grant
    approval = AuditEvent.objects.get(action="access_request.approved")
    assert approval.data == {"grant": str(grant.jti), "auto": True}


def test_a_second_live_request_is_refused(model, outsider, pending, staff):
    with pytest.raises(NotAllowed) as while_pending:
        submit(outsider, model)
    access.access_request_approve(request=pending, reviewer=staff)
    with pytest.raises(NotAllowed) as while_approved:
        submit(outsider, model)

    assert while_pending.value.code == while_approved.value.code == "already_requested"
    assert "you already have a pending request" in while_pending.value.message
    assert "you already have a approved request" in while_approved.value.message
    assert AccessRequest.objects.filter(user=outsider).count() == 1


def test_the_database_refuses_two_live_requests_of_one_person(model, outsider, pending):
    with (
        pytest.raises(IntegrityError, match="access_request_one_live"),
        transaction.atomic(),
    ):
        AccessRequest.objects.create(user=outsider, model=model, license=pending.license)


def test_reapplying_after_a_rejection_is_refused_unless_allowed(model, outsider, pending, staff):
    access.access_request_reject(request=pending, reviewer=staff, reason="no affiliation given")

    with pytest.raises(NotAllowed) as refused:
        submit(outsider, model)

    assert refused.value.code == "reapply_not_allowed"
    assert "was rejected: no affiliation given" in refused.value.message
    assert AccessRequest.objects.filter(user=outsider).count() == 1


def test_reapplying_is_allowed_when_the_reviewer_says_so(model, outsider, pending, staff):
    access.access_request_reject(
        request=pending, reviewer=staff, reason="add your affiliation", may_reapply=True
    )

    again = submit(outsider, model)

    assert again.pk != pending.pk
    assert again.status == Status.PENDING
    assert status_of(pending) == Status.REJECTED


def test_a_withdrawn_request_may_be_followed_by_a_new_one(model, outsider, pending):
    access.access_request_withdraw(request=pending, user=outsider)

    assert submit(outsider, model).status == Status.PENDING


def test_a_license_version_that_is_no_longer_current_is_refused(model, outsider, staff):
    v1 = current_license(model)
    v2 = make_license(actor=staff, slug=v1.slug, version="2.0", text="Version two.\n")
    access.gate_policy_set(actor=staff, model=model, license=v2)

    with pytest.raises(NotAllowed) as refused:
        access.access_request_submit(user=outsider, model=model, license=v1, answers={})

    assert refused.value.code == "license_outdated"
    assert "version 2.0" in refused.value.message
    assert not AccessRequest.objects.exists()
    assert submit(outsider, model).license == v2


def test_a_grant_under_an_old_license_version_stops_giving_access(model, outsider, approved, staff):
    v2 = make_license(actor=staff, slug="acme-tiny", version="2.0", text="Version two.\n")

    access.gate_policy_set(actor=staff, model=model, license=v2)

    assert live_grants(approved).exists()  # not revoked: the license moved on
    assert grant_live_for(user=outsider, model_id=model.pk) is None


def test_a_model_without_a_policy_or_license_takes_no_requests(staff, outsider):
    version = make_release(org="acme", name="plain", artifacts={"base": Phase.GATED})
    license = make_license(actor=staff, slug="other")

    with pytest.raises(NotAllowed) as no_policy:
        access.access_request_submit(
            user=outsider, model=version.model, license=license, answers={}
        )
    access.gate_policy_set(actor=staff, model=version.model, approval_mode="auto")
    with pytest.raises(NotAllowed) as no_license:
        access.access_request_submit(
            user=outsider, model=version.model, license=license, answers={}
        )
    with pytest.raises(NotAllowed) as no_direct_grant:
        access.access_grant_direct(model=version.model, user=outsider, reviewer=staff)

    assert no_policy.value.code == no_license.value.code == "not_gated"
    assert no_direct_grant.value.code == "not_gated"
    assert not AccessRequest.objects.exists()


def test_a_blocked_country_is_refused(staff, outsider):
    fields = [{"name": "country", "label": "Country", "type": "country", "required": True}]
    model = gated_model(actor=staff, mode="auto", fields=fields, blocked_countries=["KP", "RU"])

    with pytest.raises(NotAllowed) as refused:
        submit(outsider, model, {"country": "ru"})  # lower case is the same country

    assert refused.value.code == "country_blocked"
    assert refused.value.message == "acme/tiny is not available in RU"
    assert not AccessRequest.objects.exists()
    assert submit(outsider, model, {"country": "de"}).answers == {"country": "DE"}


def test_blocked_countries_are_matched_whatever_their_case_in_the_policy(staff, outsider):
    fields = [{"name": "country", "label": "Country", "type": "country", "required": True}]
    model = gated_model(actor=staff, fields=fields, blocked_countries=["ru", " kp "])

    for answer in ("RU", "kp"):
        with pytest.raises(NotAllowed) as refused:
            submit(outsider, model, {"country": answer})
        assert refused.value.code == "country_blocked"
    assert not AccessRequest.objects.exists()


def test_an_invalid_form_is_refused_before_anything_is_written(staff, outsider):
    fields = [{"name": "affiliation", "label": "Affiliation", "type": "text", "required": True}]
    model = gated_model(actor=staff, fields=fields)

    with pytest.raises(DomainError) as refused:
        submit(outsider, model, {})

    assert refused.value.code == "invalid_form"
    assert refused.value.detail == {"affiliation": "is required"}
    assert not AccessRequest.objects.exists()


# --- approve -------------------------------------------------------------------------------------


def test_staff_approve_a_pending_request_and_a_grant_is_issued(pending, staff, outsider, model):
    approved = access.access_request_approve(request=pending, reviewer=staff)

    assert approved.status == Status.APPROVED
    assert approved.reviewer == staff
    assert approved.decided_at is not None
    grant = live_grants(pending).get()
    assert (grant.user, grant.model, grant.license) == (outsider, model, pending.license)
    assert grant.license_sha256 == pending.license_sha256
    assert grant_live_for(user=outsider, model_id=model.pk) == grant


@pytest.mark.parametrize("state", ["approved", "rejected", "withdrawn"])
def test_approving_a_request_that_is_not_pending_is_refused(pending, staff, outsider, state):
    if state == "approved":
        access.access_request_approve(request=pending, reviewer=staff)
    elif state == "rejected":
        access.access_request_reject(request=pending, reviewer=staff, reason="no")
    else:
        access.access_request_withdraw(request=pending, user=outsider)

    with pytest.raises(NotAllowed) as refused:
        access.access_request_approve(request=pending, reviewer=staff)

    assert refused.value.code == "not_pending"
    assert refused.value.message == f"the request is {state}, not pending"
    assert Grant.objects.filter(request=pending).count() == (1 if state == "approved" else 0)


# --- reject -------------------------------------------------------------------------------------


def test_rejecting_a_pending_request_records_the_reason_shown_to_the_requester(pending, staff):
    rejected = access.access_request_reject(
        request=pending, reviewer=staff, reason="  Please use your work email.  "
    )

    stored = AccessRequest.objects.get(pk=pending.pk)
    assert rejected.status == stored.status == Status.REJECTED
    assert stored.reason == "Please use your work email."
    assert stored.reviewer == staff
    assert stored.may_reapply is False
    assert not Grant.objects.filter(request=pending).exists()


def test_rejecting_an_approved_request_revokes_its_grant(approved, staff, outsider, model):
    grant = live_grants(approved).get()

    access.access_request_reject(request=approved, reviewer=staff, reason="terms breached")

    grant.refresh_from_db()
    assert status_of(approved) == Status.REJECTED
    assert grant.revoked_at is not None
    assert grant.revoked_reason == "access rejected: terms breached"
    assert grant_live_for(user=outsider, model_id=model.pk) is None
    assert AuditEvent.objects.filter(action="grant.revoked", subject_id=str(grant.jti)).exists()


def test_a_reason_longer_than_500_characters_is_refused(pending, staff):
    with pytest.raises(DomainError) as refused:
        access.access_request_reject(request=pending, reviewer=staff, reason="x" * 501)

    assert refused.value.code == "reason_too_long"
    assert refused.value.message == "a reason is at most 500 characters"
    assert status_of(pending) == Status.PENDING
    access.access_request_reject(request=pending, reviewer=staff, reason="x" * 500)
    assert status_of(pending) == Status.REJECTED


@pytest.mark.parametrize("state", ["rejected", "withdrawn"])
def test_rejecting_a_closed_request_is_refused(pending, staff, outsider, state):
    if state == "rejected":
        access.access_request_reject(request=pending, reviewer=staff, reason="first")
    else:
        access.access_request_withdraw(request=pending, user=outsider)

    with pytest.raises(NotAllowed) as refused:
        access.access_request_reject(request=pending, reviewer=staff, reason="second")

    assert refused.value.code == "not_open"
    assert AccessRequest.objects.get(pk=pending.pk).reason == (
        "first" if state == "rejected" else ""
    )


# --- cancel -------------------------------------------------------------------------------------


def test_cancelling_an_approval_returns_the_request_to_pending_and_revokes_the_grant(
    approved, staff, outsider, model
):
    first = live_grants(approved).get()

    cancelled = access.access_request_cancel(request=approved, reviewer=staff)

    first.refresh_from_db()
    assert cancelled.status == status_of(approved) == Status.PENDING
    assert cancelled.decided_at is None
    assert first.revoked_reason == "access cancelled by a reviewer"
    assert grant_live_for(user=outsider, model_id=model.pk) is None
    # Approved again: a new grant, the revoked one stays revoked.
    access.access_request_approve(request=approved, reviewer=staff)
    second = live_grants(approved).get()
    assert second.jti != first.jti
    assert Grant.objects.filter(request=approved).count() == 2


@pytest.mark.parametrize("state", ["pending", "rejected", "withdrawn"])
def test_cancelling_a_request_that_is_not_approved_is_refused(pending, staff, outsider, state):
    if state == "rejected":
        access.access_request_reject(request=pending, reviewer=staff, reason="no")
    elif state == "withdrawn":
        access.access_request_withdraw(request=pending, user=outsider)

    with pytest.raises(NotAllowed) as refused:
        access.access_request_cancel(request=pending, reviewer=staff)

    assert refused.value.code == "not_approved"
    assert refused.value.message == f"the request is {state}, not approved"
    assert status_of(pending) == state


# --- withdraw ------------------------------------------------------------------------------------


def test_the_author_withdraws_a_pending_request(pending, outsider):
    withdrawn = access.access_request_withdraw(request=pending, user=outsider)

    assert withdrawn.status == status_of(pending) == Status.WITHDRAWN
    assert AuditEvent.objects.filter(
        action="access_request.withdrawn", actor=outsider.username
    ).exists()


def test_nobody_else_may_withdraw_a_request_not_even_staff(pending, staff):
    other = make_user("mallory")

    for person in (other, staff):
        with pytest.raises(NotAllowed) as refused:
            access.access_request_withdraw(request=pending, user=person)
        assert refused.value.code == "not_author"
        assert refused.value.message == "only its author may withdraw a request"
    assert status_of(pending) == Status.PENDING


def test_withdrawing_a_request_that_is_not_pending_is_refused(approved, outsider):
    with pytest.raises(NotAllowed) as refused:
        access.access_request_withdraw(request=approved, user=outsider)

    assert refused.value.code == "not_pending"
    assert status_of(approved) == Status.APPROVED
    assert live_grants(approved).exists()


# --- who may review ------------------------------------------------------------------------------


@pytest.fixture(params=["developer", "inactive staff"])
def not_staff(request, db):
    if request.param == "developer":
        return make_user("developer")
    return make_user("former", is_staff=True, is_active=False)


def test_only_staff_may_review_grant_or_revoke(model, pending, not_staff, staff, outsider):
    someone = make_user("someone")
    calls: dict[str, list[Callable[[], object]]] = {
        "review access requests": [
            lambda: access.access_request_approve(request=pending, reviewer=not_staff),
            lambda: access.access_request_reject(request=pending, reviewer=not_staff, reason="x"),
            lambda: access.access_request_cancel(request=pending, reviewer=not_staff),
            lambda: access.access_requests_handle(
                model=model, ids=[pending.pk], status="approved", reviewer=not_staff
            ),
        ],
        "grant access": [
            lambda: access.access_grant_direct(model=model, user=someone, reviewer=not_staff)
        ],
        "publish licenses": [lambda: make_license(actor=not_staff, slug="mine")],
        "change gate policies": [
            lambda: access.gate_policy_set(actor=not_staff, model=model, approval_mode="auto")
        ],
    }

    for what, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(NotAllowed) as refused:
                attempt()
            assert refused.value.code == "staff_only"
            assert refused.value.message == f"only staff may {what}"
    access.access_request_approve(request=pending, reviewer=staff)
    grant = live_grants(pending).get()
    with pytest.raises(NotAllowed, match="only staff may revoke grants"):
        access.grant_revoke(grant=grant, actor=not_staff, reason="x")

    assert live_grants(pending).get() == grant
    assert not AccessRequest.objects.filter(user=someone).exists()
    assert GatePolicy.objects.get(model=model).approval_mode == "manual"


# --- direct grants -------------------------------------------------------------------------------


def test_staff_grant_access_to_someone_who_never_asked(model, staff):
    invited = make_user("invited")

    request = access.access_grant_direct(model=model, user=invited, reviewer=staff)

    assert request.status == Status.APPROVED
    assert request.reviewer == staff
    assert request.user_agent == "granted by staff"
    assert request.license == current_license(model)
    assert grant_live_for(user=invited, model_id=model.pk) == live_grants(request).get()


def test_a_direct_grant_approves_a_pending_request_rather_than_adding_one(pending, staff, model):
    request = access.access_grant_direct(model=model, user=pending.user, reviewer=staff)

    assert request.pk == pending.pk
    assert request.status == Status.APPROVED
    assert AccessRequest.objects.filter(user=pending.user).count() == 1


def test_a_direct_grant_to_someone_already_approved_is_refused(approved, staff, model, outsider):
    with pytest.raises(NotAllowed) as refused:
        access.access_grant_direct(model=model, user=outsider, reviewer=staff)

    assert refused.value.code == "already_granted"
    assert refused.value.message == "outsider already has access to acme/tiny"
    assert Grant.objects.count() == 1


# --- licenses and policies -------------------------------------------------------------------


def test_a_license_is_published_once_and_needs_text(staff):
    published = make_license(actor=staff, slug="one")
    empty = make_license(actor=staff, slug="empty", text=" \n", publish=False)

    with pytest.raises(NotAllowed) as again:
        access.license_publish(actor=staff, license=published)
    with pytest.raises(DomainError) as no_text:
        access.license_publish(actor=staff, license=empty)

    assert again.value.code == "license_published"
    assert no_text.value.code == "license_empty"
    empty.refresh_from_db()
    assert empty.published_at is None


def test_a_policy_may_only_require_a_published_license(staff, model):
    draft = make_license(actor=staff, slug="draft", publish=False)

    with pytest.raises(NotAllowed) as refused:
        access.gate_policy_set(actor=staff, model=model, license=draft)

    assert refused.value.code == "license_unpublished"
    assert GatePolicy.objects.get(model=model).license != draft


# --- bulk handling --------------------------------------------------------------------------------


def test_bulk_handling_decides_each_request_on_its_own(model, staff, outsider):
    others = [make_user(f"dev{i}") for i in range(3)]
    requests = [submit(person, model) for person in [outsider, *others]]
    access.access_request_approve(request=requests[0], reviewer=staff)
    elsewhere = submit(outsider, gated_model(actor=staff, name="other"))

    handled, refused = access.access_requests_handle(
        model=model,
        ids=[r.pk for r in requests] + [elsewhere.pk, 999999],
        status="approved",
        reviewer=staff,
    )

    assert sorted(handled) == sorted(r.pk for r in requests[1:])
    assert refused == {
        requests[0].pk: "the request is approved, not pending",
        elsewhere.pk: "no such request for this model",
        999999: "no such request for this model",
    }
    assert status_of(elsewhere) == Status.PENDING
    with pytest.raises(DomainError) as bad_status:
        access.access_requests_handle(model=model, ids=[1], status="withdrawn", reviewer=staff)
    assert bad_status.value.code == "invalid_status"


# --- races and database invariants ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_parallel_approvals_issue_exactly_one_grant(staff, outsider):
    model = gated_model(actor=staff)
    request = submit(outsider, model)
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def approve():
        # Each thread has its own database connection (Django keeps one per thread).
        try:
            barrier.wait(timeout=10)
            try:
                access.access_request_approve(request=request, reviewer=staff)
                outcome = "approved"
            except NotAllowed as refused:
                outcome = refused.code
            except Exception as error:  # noqa: BLE001 - reported in the assertion below
                outcome = repr(error)
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(outcomes) == workers
    assert outcomes.count("approved") == 1, outcomes
    assert set(outcomes) - {"approved"} <= {"not_pending", "already_granted"}, outcomes
    assert Grant.objects.filter(request=request).count() == 1
    assert status_of(request) == Status.APPROVED
    assert AuditEvent.objects.filter(action="access_request.approved").count() == 1


def test_the_database_refuses_a_second_live_grant_for_one_request(approved):
    grant = live_grants(approved).get()

    with (
        pytest.raises(IntegrityError, match="grant_one_live_per_request"),
        transaction.atomic(),
    ):
        Grant.objects.create(
            jti="00000000-0000-4000-8000-000000000001",
            request=approved,
            user=grant.user,
            model=grant.model,
            license=grant.license,
            license_sha256=grant.license_sha256,
            kid=grant.kid,
            token="x",
            issued_at=timezone.now(),
        )


def test_approving_a_request_made_under_a_superseded_license_is_refused(model, pending, staff):
    v2 = make_license(actor=staff, slug="acme-tiny", version="2.0", text="New terms.\n")
    access.gate_policy_set(actor=staff, model=model, license=v2)

    with pytest.raises(NotAllowed) as refused:
        access.access_request_approve(request=pending, reviewer=staff)

    assert refused.value.code == "license_outdated"
    assert status_of(pending) == AccessRequest.Status.PENDING
    assert not Grant.objects.filter(request=pending).exists()
