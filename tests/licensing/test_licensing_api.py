"""The licensing API: what a developer sees and asks for, what only they may see of their own,
and the review API that only staff may use. Every refusal has its status and error code."""

from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from rest_framework.test import APIClient

from licensing import access
from licensing.models import AccessRequest, Grant
from licensing.selectors import grant_live_for
from release.models import Phase
from tests.factories import make_release, make_user
from tests.licensing.factories import (
    current_license,
    gated_model,
    isolated_cache,
    make_license,
    submit,
)

FIELDS = [
    {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
    {"name": "country", "label": "Country", "type": "country", "required": True},
    {"name": "terms", "label": "I accept", "type": "checkbox", "required": True},
]
ANSWERS = {"affiliation": "Acme Labs", "country": "fr", "terms": True}
BASE = "/api/v1/models/acme/tiny"


@pytest.fixture(autouse=True)
def _own_cache(settings):
    isolated_cache(settings)


@pytest.fixture
def model(staff):
    return gated_model(actor=staff, fields=FIELDS)


@pytest.fixture
def auto_model(staff):
    return gated_model(actor=staff, mode="auto", name="auto")


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def error_of(response, status: int) -> Any:
    assert response.status_code == status, response.content
    return response.json()["error"]


def request_body(model, **extra):
    return {"license_sha256": current_license(model).text_sha256, "answers": ANSWERS, **extra}


# --- the gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "developer"])
def test_gate_shows_the_license_and_form(model, who, outsider):
    response = client_for(outsider if who == "developer" else None).get(f"{BASE}/gate")

    assert response.status_code == 200
    body = response.json()
    license = current_license(model)
    assert body["approval_mode"] == "manual"
    assert body["form_fields"] == FIELDS
    assert body["license"]["id"] == "acme-tiny"
    assert body["license"]["version"] == "1.0"
    assert body["license"]["text"] == license.text
    assert body["license"]["text_sha256"] == license.text_sha256


def test_gate_of_a_model_that_takes_no_requests_is_404(outsider):
    make_release(org="acme", name="tiny", artifacts={"base": Phase.OPEN})

    assert error_of(client_for(outsider).get(f"{BASE}/gate"), 404)["code"] == "not_gated"


def test_gate_of_a_proprietary_model_does_not_exist_for_developers(staff, outsider):
    model = make_release(org="acme", name="secret", artifacts={"base": Phase.PROPRIETARY}).model
    license = make_license(actor=staff, slug="secret")
    access.gate_policy_set(actor=staff, model=model, license=license)

    response = client_for(outsider).get("/api/v1/models/acme/secret/gate")

    assert error_of(response, 404)["code"] == "model_not_found"
    assert client_for(staff).get("/api/v1/models/acme/secret/gate").status_code == 200


# --- asking for access --------------------------------------------------------------------------


def test_anonymous_may_not_request_access(model):
    response = client_for().post(f"{BASE}/access-requests/", request_body(model), format="json")

    # 401, not 403: the API takes bearer tokens, so it says how to authenticate.
    assert error_of(response, 401)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="weightgate"'
    assert not AccessRequest.objects.exists()


def test_a_manual_request_is_created_pending(model, outsider):
    response = client_for(outsider).post(
        f"{BASE}/access-requests/",
        request_body(model),
        format="json",
        HTTP_USER_AGENT="curl/8.5",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["grant"] is None
    assert body["model"] == "acme/tiny"
    assert (body["license"], body["license_version"]) == ("acme-tiny", "1.0")
    assert body["answers"] == {**ANSWERS, "country": "FR"}
    stored = AccessRequest.objects.get(pk=body["id"])
    assert (stored.user, stored.ip, stored.user_agent) == (outsider, "127.0.0.1", "curl/8.5")


def test_an_auto_request_is_approved_at_once_with_its_grant(auto_model, outsider):
    response = client_for(outsider).post(
        "/api/v1/models/acme/auto/access-requests/",
        {"license_sha256": current_license(auto_model).text_sha256},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "approved"
    grant = Grant.objects.get(user=outsider)
    assert body["grant"] == str(grant.jti)
    assert grant_live_for(user=outsider, model_id=auto_model.pk) == grant


def test_a_request_for_an_unknown_license_text_is_404(model, outsider):
    body = request_body(model, license_sha256="0" * 64)

    response = client_for(outsider).post(f"{BASE}/access-requests/", body, format="json")

    error = error_of(response, 404)
    assert error == {
        "code": "license_not_found",
        "message": "no published license has that text hash",
    }


def test_a_request_for_an_old_license_version_is_409(model, outsider, staff):
    old = current_license(model)
    new = make_license(actor=staff, slug="acme-tiny", version="2.0", text="Two.\n")
    access.gate_policy_set(actor=staff, model=model, license=new)

    response = client_for(outsider).post(
        f"{BASE}/access-requests/",
        {"license_sha256": old.text_sha256, "answers": ANSWERS},
        format="json",
    )

    assert error_of(response, 409)["code"] == "license_outdated"


def test_a_license_text_shared_by_two_licenses_is_the_models_current_one(staff, outsider):
    """Two published licenses may have one text (another slug, or a new version that changes
    only flags): the hash the developer accepted is the model's current license."""
    model = gated_model(actor=staff, mode="auto")
    make_license(actor=staff, slug="aaa-same-text")  # sorts first, same LICENSE_TEXT

    response = client_for(outsider).post(
        f"{BASE}/access-requests/",
        {"license_sha256": current_license(model).text_sha256},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert (response.json()["license"], response.json()["status"]) == ("acme-tiny", "approved")


def test_a_malformed_request_is_400_with_the_field_named(model, outsider):
    response = client_for(outsider).post(
        f"{BASE}/access-requests/", {"license_sha256": "abc", "answers": []}, format="json"
    )

    error = error_of(response, 400)
    assert error["code"] == "invalid"
    assert set(error["detail"]) == {"license_sha256", "answers"}


def test_a_bad_form_is_400_with_every_problem_by_field(model, outsider):
    answers = {"affiliation": "\u202eevil", "country": "Atlantis", "extra": 1}

    response = client_for(outsider).post(
        f"{BASE}/access-requests/", request_body(model, answers=answers), format="json"
    )

    error = error_of(response, 400)
    assert error["code"] == "invalid_form"
    assert error["detail"] == {
        "affiliation": "contains control or invisible formatting characters",
        "country": "must be an ISO 3166-1 alpha-2 country code",
        "terms": "must be ticked",
        "extra": "is not a field of this form",
    }
    assert not AccessRequest.objects.exists()


def test_a_second_request_is_409(model, outsider):
    client = client_for(outsider)
    client.post(f"{BASE}/access-requests/", request_body(model), format="json")

    response = client.post(f"{BASE}/access-requests/", request_body(model), format="json")

    assert error_of(response, 409)["code"] == "already_requested"


# --- my requests and grants -----------------------------------------------------------------------


def test_my_requests_list_only_my_own(model, auto_model, outsider):
    mine = submit(outsider, model, ANSWERS)
    mine_auto = submit(outsider, auto_model)
    submit(make_user("someone"), model, ANSWERS)
    submit(make_user("another"), auto_model)

    response = client_for(outsider).get("/api/v1/me/access-requests/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [r["id"] for r in body["results"]] == [mine_auto.pk, mine.pk]  # newest first
    assert body["results"][0]["grant"] == str(Grant.objects.get(request=mine_auto).jti)
    assert client_for().get("/api/v1/me/access-requests/").status_code == 401


def test_i_withdraw_my_pending_request_but_not_someone_elses(model, outsider):
    mine = submit(outsider, model, ANSWERS)
    theirs = submit(make_user("someone"), model, ANSWERS)
    client = client_for(outsider)

    not_mine = client.post(f"/api/v1/me/access-requests/{theirs.pk}/withdraw")
    withdrawn = client.post(f"/api/v1/me/access-requests/{mine.pk}/withdraw")
    again = client.post(f"/api/v1/me/access-requests/{mine.pk}/withdraw")

    assert error_of(not_mine, 404)["code"] == "not_found"
    assert AccessRequest.objects.get(pk=theirs.pk).status == "pending"
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"
    assert error_of(again, 409)["code"] == "not_pending"


def test_my_grants_list_only_my_own_with_the_token(auto_model, outsider):
    submit(outsider, auto_model)
    submit(make_user("someone"), auto_model)
    grant = Grant.objects.get(user=outsider)

    response = client_for(outsider).get("/api/v1/me/grants/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    (only,) = body["results"]
    assert only["id"] == str(grant.jti)
    assert only["token"] == grant.token
    assert (only["model"], only["license"], only["kid"]) == ("acme/auto", "acme-auto", grant.kid)
    assert client_for().get("/api/v1/me/grants/").status_code == 401


def test_i_download_my_grant_as_a_jwt_but_not_someone_elses(auto_model, outsider):
    submit(outsider, auto_model)
    submit(make_user("someone"), auto_model)
    mine = Grant.objects.get(user=outsider)
    theirs = Grant.objects.exclude(user=outsider).get()
    client = client_for(outsider)

    response = client.get(f"/api/v1/me/grants/{mine.jti}.jwt")
    not_mine = client.get(f"/api/v1/me/grants/{theirs.jti}.jwt")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/jwt"
    assert response["Content-Disposition"] == f'attachment; filename="grant-{mine.jti}.jwt"'
    assert response.content.decode() == mine.token
    assert error_of(not_mine, 404)["code"] == "not_found"
    assert client_for().get(f"/api/v1/me/grants/{mine.jti}.jwt").status_code == 401


# --- the review API is for staff only ------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "developer"])
def test_the_review_api_refuses_everyone_but_staff(model, outsider, staff, who):
    request = submit(outsider, model, ANSWERS)
    access.access_request_approve(request=request, reviewer=staff)
    grant = Grant.objects.get(request=request)
    client = client_for(make_user("developer") if who == "developer" else None)
    status, code = (401, "not_authenticated") if who == "anonymous" else (403, "permission_denied")

    attempts = [
        client.get(f"{BASE}/access-requests/review?status=pending"),
        client.post(
            f"{BASE}/access-requests/handle",
            {"ids": [request.pk], "status": "pending"},
            format="json",
        ),
        client.post(f"{BASE}/access-requests/grant", {"user": "outsider"}, format="json"),
        client.post(f"/api/v1/grants/{grant.jti}/revoke", {"reason": "x"}, format="json"),
    ]

    assert [error_of(r, status)["code"] for r in attempts] == [code] * 4
    assert AccessRequest.objects.get(pk=request.pk).status == "approved"
    assert Grant.objects.get(pk=grant.pk).revoked_at is None


def test_reviewers_page_through_pending_requests_oldest_first(model, staff):
    requests = [submit(make_user(f"dev{i}"), model, ANSWERS) for i in range(3)]
    access.access_request_approve(request=requests[1], reviewer=staff)
    client = client_for(staff)

    first = client.get(f"{BASE}/access-requests/review?status=pending&limit=1").json()
    second = client.get(f"{BASE}/access-requests/review?status=pending&limit=1&offset=1").json()
    approved = client.get(f"{BASE}/access-requests/review?status=approved").json()
    default = client.get(f"{BASE}/access-requests/review").json()

    assert first["count"] == second["count"] == 2
    assert [r["id"] for r in first["results"]] == [requests[0].pk]
    assert first["next"] is not None
    assert [r["id"] for r in second["results"]] == [requests[2].pk]
    assert second["next"] is None
    assert [r["id"] for r in approved["results"]] == [requests[1].pk]
    assert approved["results"][0]["grant"] is not None
    assert default["count"] == 2  # pending unless asked otherwise


def test_reviewing_an_unknown_status_is_400(model, staff):
    response = client_for(staff).get(f"{BASE}/access-requests/review?status=maybe")

    assert "status must be one of" in error_of(response, 400)["message"]


def test_bulk_approval_reports_what_it_refused(model, staff):
    requests = [submit(make_user(f"dev{i}"), model, ANSWERS) for i in range(4)]
    access.access_request_approve(request=requests[0], reviewer=staff)
    ids = [r.pk for r in requests]

    response = client_for(staff).post(
        f"{BASE}/access-requests/handle", {"ids": ids, "status": "approved"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert sorted(body["handled"]) == sorted(ids[1:])
    assert body["refused"] == {str(ids[0]): "the request is approved, not pending"}
    assert Grant.objects.filter(request_id__in=ids, revoked_at__isnull=True).count() == 4


def test_bulk_rejection_shows_the_reason_to_the_requester(model, staff, outsider):
    request = submit(outsider, model, ANSWERS)

    response = client_for(staff).post(
        f"{BASE}/access-requests/handle",
        {"ids": [request.pk], "status": "rejected", "reason": "Use a work email."},
        format="json",
    )
    mine = client_for(outsider).get("/api/v1/me/access-requests/").json()["results"]

    assert response.json() == {"handled": [request.pk], "refused": {}}
    assert (mine[0]["status"], mine[0]["reason"]) == ("rejected", "Use a work email.")
    assert mine[0]["may_reapply"] is False


def test_bulk_status_pending_cancels_approvals(model, staff, outsider):
    request = submit(outsider, model, ANSWERS)
    access.access_request_approve(request=request, reviewer=staff)
    pending = submit(make_user("waiting"), model, ANSWERS)

    response = client_for(staff).post(
        f"{BASE}/access-requests/handle",
        {"ids": [request.pk, pending.pk], "status": "pending"},
        format="json",
    )

    assert response.json() == {
        "handled": [request.pk],
        "refused": {str(pending.pk): "the request is pending, not approved"},
    }
    assert AccessRequest.objects.get(pk=request.pk).status == "pending"
    assert grant_live_for(user=outsider, model_id=model.pk) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [], "status": "approved"}, "ids"),
        ({"ids": [1], "status": "withdrawn"}, "status"),
        ({"ids": ["x"], "status": "approved"}, "ids"),
        ({"ids": [1], "status": "rejected", "reason": "x" * 501}, "reason"),
    ],
)
def test_a_malformed_bulk_request_is_400(model, staff, body, field):
    response = client_for(staff).post(f"{BASE}/access-requests/handle", body, format="json")

    assert field in error_of(response, 400)["detail"]


def test_staff_grant_access_to_a_user_by_name(model, staff):
    invited = make_user("invited")
    client = client_for(staff)

    response = client.post(f"{BASE}/access-requests/grant", {"user": "invited"}, format="json")
    again = client.post(f"{BASE}/access-requests/grant", {"user": "invited"}, format="json")
    nobody = client.post(f"{BASE}/access-requests/grant", {"user": "nobody"}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "approved"
    assert response.json()["grant"] == str(Grant.objects.get(user=invited).jti)
    assert error_of(again, 409)["code"] == "already_granted"
    assert error_of(nobody, 404) == {"code": "user_not_found", "message": "no active user 'nobody'"}


def test_staff_revoke_a_grant_with_a_reason(
    auto_model, staff, outsider, django_capture_on_commit_callbacks
):
    submit(outsider, auto_model)
    grant = Grant.objects.get(user=outsider)
    client = client_for(staff)
    url = f"/api/v1/grants/{grant.jti}/revoke"

    no_reason = client.post(url, {}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        revoked = client.post(url, {"reason": "licence breach"}, format="json")
    again = client.post(url, {"reason": "again"}, format="json")
    unknown = client.post(
        "/api/v1/grants/00000000-0000-4000-8000-000000000000/revoke",
        {"reason": "x"},
        format="json",
    )
    listing = client_for().get("/.well-known/weightgate-revocations.jwt").content.decode()

    assert "reason" in error_of(no_reason, 400)["detail"]
    assert revoked.status_code == 200
    assert revoked.json()["id"] == str(grant.jti)
    assert revoked.json()["revoked_reason"] == "licence breach"
    assert revoked.json()["revoked_at"] is not None
    assert grant_live_for(user=outsider, model_id=auto_model.pk) is None
    assert error_of(again, 409)["code"] == "already_revoked"
    assert error_of(unknown, 404)["code"] == "not_found"
    jwks = client_for().get("/.well-known/jwks.json").json()
    claims = jwt.decode(listing, KeySet.import_key_set(jwks), algorithms=["ES256"]).claims
    assert claims["revoked"] == [str(grant.jti)]


# --- public documents -----------------------------------------------------------------------------


def test_public_key_documents_need_no_login(auto_model, outsider):
    submit(outsider, auto_model)
    anonymous = client_for()

    jwks = anonymous.get("/.well-known/jwks.json")
    revocations = anonymous.get("/.well-known/weightgate-revocations.jwt")
    keys = anonymous.get("/api/v1/signing-keys/")

    assert jwks.status_code == revocations.status_code == keys.status_code == 200
    assert [k["kid"] for k in jwks.json()["keys"]] == [Grant.objects.get().kid]
    assert revocations["Cache-Control"] == "public, max-age=30"
    listed = keys.json()["results"]
    assert {k["purpose"] for k in listed} == {"grants", "models"}
    public_fields = {"kid", "purpose", "algorithm", "state", "public_pem", "created_at"}
    assert all(set(k) == public_fields | {"retired_at"} for k in listed)  # no private half


def test_bulk_review_refuses_more_than_a_thousand_ids_a_call(model, staff):
    response = client_for(staff).post(
        f"{BASE}/access-requests/handle",
        {"ids": list(range(1, 1002)), "status": "approved"},
        format="json",
    )

    assert response.status_code == 400
    assert "ids" in response.json()["error"]["detail"]
