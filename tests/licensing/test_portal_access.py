"""The portal's access flow: the request page (license, custom form, validation on the page),
the status page (pending, approved with the signed grant, rejected, withdrawn), download
tokens, and "My access" — each person seeing and changing only their own."""

import re
from typing import Any

import pytest
from django.test import Client

from licensing import access
from licensing.models import AccessRequest, DownloadToken
from licensing.tokens import token_create, token_hash
from release.models import Phase
from tests.factories import make_release, make_user
from tests.licensing.factories import LICENSE_TEXT, current_license, gated_model, submit

pytestmark = pytest.mark.django_db

FIELDS: list[dict[str, Any]] = [
    {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
    {"name": "use", "label": "Intended use", "type": "select", "options": ["research", "product"]},
    {"name": "country", "label": "Country", "type": "country", "required": True},
    {"name": "born", "label": "Date of birth", "type": "date"},
    {"name": "terms", "label": "I read the terms", "type": "checkbox", "required": True},
]
REQUEST_URL = "/models/acme/tiny/access/request"
STATUS_URL = "/models/acme/tiny/access"


@pytest.fixture
def model(staff):
    return gated_model(actor=staff, fields=FIELDS, blocked_countries=["KP"])


@pytest.fixture
def me(outsider) -> Client:
    client = Client()
    client.force_login(outsider)
    return client


def good_answers(model, **changes):
    answers = {
        "license_sha256": current_license(model).text_sha256,
        "affiliation": "Univ. of Examples",
        "use": "research",
        "country": "FR",
        "born": "1990-04-01",
        "terms": "on",
    }
    answers.update(changes)
    return {key: value for key, value in answers.items() if value is not None}


# --- Who may see the pages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", [REQUEST_URL, STATUS_URL, "/tokens/", "/me/access/", "/tokens/1/revoke"]
)
def test_anonymous_visitors_are_sent_to_sign_in(client, model, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_request_page_of_a_proprietary_model_is_404(me):
    make_release(org="acme", name="hidden", artifacts={"base": Phase.PROPRIETARY})
    assert me.get("/models/acme/hidden/access/request").status_code == 404
    assert me.get("/models/acme/hidden/access").status_code == 404


def test_request_page_of_a_model_without_a_license_is_404(me):
    make_release(org="acme", name="plain", artifacts={"base": Phase.OPEN})
    assert me.get("/models/acme/plain/access/request").status_code == 404


# --- Requesting access --------------------------------------------------------------------------


def test_request_page_shows_the_license_and_the_form(me, model):
    html = me.get(REQUEST_URL).content.decode()
    license = current_license(model)
    assert "You may use these weights for research." in html
    assert "version 1.0" in html
    assert license.text_sha256 in html
    assert '<label for="field-affiliation">Affiliation' in html
    assert '<option value="research"' in html
    assert '<option value="FR">France</option>' in html  # pycountry names
    assert 'type="date" id="field-born"' in html
    assert 'type="checkbox" id="field-terms"' in html
    assert "Accept the license and request access" in html


def test_form_errors_are_shown_on_the_page_and_nothing_is_saved(me, model):
    response = me.post(REQUEST_URL, good_answers(model, affiliation="  ", country="XX", terms=None))

    assert response.status_code == 400
    html = response.content.decode()
    assert "Your request was not sent" in html
    assert "Affiliation is required" in html
    assert "Country must be an ISO 3166-1 alpha-2 country code" in html
    assert "I read the terms must be ticked" in html
    assert 'aria-invalid="true"' in html
    assert 'value="research" selected' in html  # what was typed is kept
    assert AccessRequest.objects.count() == 0


def test_a_blocked_country_is_refused_on_the_page(me, model):
    response = me.post(REQUEST_URL, good_answers(model, country="KP"))
    assert response.status_code == 400
    assert "is not available in KP" in response.content.decode()
    assert AccessRequest.objects.count() == 0


def test_accepting_an_outdated_license_is_refused_and_the_new_one_shown(me, model, staff):
    from tests.licensing.factories import make_license

    old_sha = current_license(model).text_sha256
    newer = make_license(actor=staff, slug="acme-tiny", version="2.0", text=LICENSE_TEXT + "v2\n")
    access.gate_policy_set(actor=staff, model=model, license=newer)

    response = me.post(REQUEST_URL, good_answers(model, license_sha256=old_sha))

    assert response.status_code == 400
    html = response.content.decode()
    assert "the license changed" in html.lower()
    assert newer.text_sha256 in html
    assert AccessRequest.objects.count() == 0


def test_submitting_records_the_request_and_shows_it_pending(me, model, outsider):
    response = me.post(
        REQUEST_URL, good_answers(model), HTTP_USER_AGENT="pytest-browser/1", follow=True
    )

    assert response.redirect_chain[-1][0] == STATUS_URL
    html = response.content.decode()
    assert "pending" in html
    assert "Withdraw my request" in html
    request = AccessRequest.objects.get()
    assert request.user == outsider
    assert request.status == AccessRequest.Status.PENDING
    assert request.license_sha256 == current_license(model).text_sha256
    assert request.answers == {
        "affiliation": "Univ. of Examples",
        "use": "research",
        "country": "FR",
        "born": "1990-04-01",
        "terms": True,
    }
    assert request.ip == "127.0.0.1"
    assert request.user_agent == "pytest-browser/1"


def test_a_second_request_while_pending_goes_to_the_status_page(me, model):
    me.post(REQUEST_URL, good_answers(model))
    response = me.get(REQUEST_URL)
    assert response.status_code == 302
    assert response["Location"] == STATUS_URL
    assert me.post(REQUEST_URL, good_answers(model))["Location"] == STATUS_URL
    assert AccessRequest.objects.count() == 1


def test_auto_approval_shows_the_signed_grant_to_download(me, staff):
    model = gated_model(actor=staff, mode="auto")
    response = me.post(REQUEST_URL, good_answers(model), follow=True)

    html = response.content.decode()
    grant = AccessRequest.objects.get().grants.get()
    link = f"/api/v1/me/grants/{grant.jti}.jwt"
    assert "approved" in html
    assert link in html
    download = me.get(link)  # the API accepts the portal's session
    assert download.status_code == 200
    assert download["Content-Type"] == "application/jwt"
    assert download.content.decode() == grant.token


def test_withdrawing_a_pending_request(me, model):
    me.post(REQUEST_URL, good_answers(model))

    response = me.post("/models/acme/tiny/access/withdraw", follow=True)

    assert AccessRequest.objects.get().status == AccessRequest.Status.WITHDRAWN
    html = response.content.decode()
    assert "withdrawn" in html
    assert "Request access again" in html


def test_withdraw_is_post_only(me, model):
    me.post(REQUEST_URL, good_answers(model))
    assert me.get("/models/acme/tiny/access/withdraw").status_code == 405
    assert AccessRequest.objects.get().status == AccessRequest.Status.PENDING


def test_a_rejection_shows_its_reason_and_whether_one_may_apply_again(me, model, outsider, staff):
    request = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_reject(request=request, reviewer=staff, reason="Use a work email")

    html = me.get(STATUS_URL).content.decode()
    assert "rejected" in html
    assert "Use a work email" in html
    assert "did not allow a new request" in html
    assert me.get(REQUEST_URL)["Location"] == STATUS_URL


def test_a_rejected_person_allowed_to_reapply_may_request_again(me, model, outsider, staff):
    request = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_reject(request=request, reviewer=staff, reason="Fix it", may_reapply=True)

    assert "Request access again" in me.get(STATUS_URL).content.decode()
    assert "Your earlier request was rejected" in me.get(REQUEST_URL).content.decode()
    me.post(REQUEST_URL, good_answers(model))
    assert AccessRequest.objects.filter(status="pending").count() == 1


def test_status_page_after_approval_links_the_grant(me, model, outsider, staff):
    request = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_approve(request=request, reviewer=staff)
    grant = request.grants.get()

    html = me.get(STATUS_URL).content.decode()
    assert "Download the signed grant" in html
    assert f"/api/v1/me/grants/{grant.jti}.jwt" in html
    # And the model page says so too.
    assert "access granted" in me.get("/models/acme/tiny").content.decode()


def test_no_one_downloads_another_persons_grant(model, outsider, staff):
    request = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_approve(request=request, reviewer=staff)
    grant = request.grants.get()
    other = Client()
    other.force_login(make_user("mallory"))

    assert other.get(f"/api/v1/me/grants/{grant.jti}.jwt").status_code == 404
    assert str(grant.jti) not in other.get(STATUS_URL).content.decode()
    assert str(grant.jti)[:8] not in other.get("/me/access/").content.decode()


# --- My access ------------------------------------------------------------------------------------


def test_my_access_lists_only_my_requests_and_grants(me, model, outsider, staff):
    mine = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_approve(request=mine, reviewer=staff)
    other_model = gated_model(actor=staff, org="beta", name="other")
    mallory = make_user("mallory")
    submit(mallory, other_model)

    html = me.get("/me/access/").content.decode()

    assert "acme/tiny" in html
    assert "beta/other" not in html
    assert f"grant-{str(mine.grants.get().jti)[:8]}.jwt" in html
    assert "live" in html


def test_my_access_says_when_a_grant_was_revoked(me, model, outsider, staff):
    mine = submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})
    access.access_request_approve(request=mine, reviewer=staff)
    access.grant_revoke(grant=mine.grants.get(), actor=staff, reason="terms breached")

    html = me.get("/me/access/").content.decode()
    assert "badge-revoked" in html


# --- Tokens -------------------------------------------------------------------------------------


def test_creating_a_token_shows_it_once(me, outsider):
    response = me.post("/tokens/", {"name": "laptop", "models": "acme/tiny", "expires": "30"})

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    html = response.content.decode()
    secret = re.search(r'id="token-value" class="secret" value="(wg_[0-9A-Za-z]+)"', html)
    assert secret is not None
    token = DownloadToken.objects.get(user=outsider)
    assert token.token_hash == token_hash(secret.group(1))
    assert token.model_ids == ["acme/tiny"]
    assert token.expires_at is not None
    assert "Copy it now" in html

    listing = me.get("/tokens/").content.decode()
    assert "laptop" in listing
    assert secret.group(1) not in listing  # never again
    assert f"…{token.hint}" in listing


def test_token_form_errors_are_shown_and_nothing_is_saved(me):
    response = me.post("/tokens/", {"name": "", "models": "not-a-repo", "expires": "30"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required" in html
    assert "Name models as org/name: not-a-repo" in html
    assert DownloadToken.objects.count() == 0


def test_tokens_list_shows_last_use_and_expiry_of_mine_only(me, outsider):
    token_create(user=outsider, name="ci-runner")
    token_create(user=make_user("mallory"), name="mallorys-secret-box")

    html = me.get("/tokens/").content.decode()
    assert "ci-runner" in html
    assert "never" in html  # never used, never expires
    assert "mallorys-secret-box" not in html


def test_revoking_asks_for_confirmation_then_revokes(me, outsider):
    token, _ = token_create(user=outsider, name="old")

    confirm = me.get(f"/tokens/{token.pk}/revoke")
    assert confirm.status_code == 200
    assert "Revoke the token" in confirm.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None  # a GET changes nothing

    response = me.post(f"/tokens/{token.pk}/revoke", follow=True)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "was revoked" in response.content.decode()


def test_no_one_may_revoke_another_persons_token(me):
    token, _ = token_create(user=make_user("mallory"), name="theirs")

    assert me.get(f"/tokens/{token.pk}/revoke").status_code == 404
    assert me.post(f"/tokens/{token.pk}/revoke").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


# --- CSRF -----------------------------------------------------------------------------------------


def test_every_form_needs_the_csrf_token(model, outsider):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(outsider)
    token, _ = token_create(user=outsider, name="kept")
    submit(outsider, model, {"affiliation": "x", "country": "FR", "terms": True})

    for url, data in [
        ("/tokens/", {"name": "x", "expires": "30"}),
        (f"/tokens/{token.pk}/revoke", {}),
        ("/models/acme/tiny/access/withdraw", {}),
        (REQUEST_URL, good_answers(model)),
    ]:
        assert strict.post(url, data).status_code == 403, url

    token.refresh_from_db()
    assert token.revoked_at is None
    assert DownloadToken.objects.count() == 1
    assert AccessRequest.objects.get().status == AccessRequest.Status.PENDING


def test_forms_carry_the_csrf_token(me, model, outsider):
    token, _ = token_create(user=outsider, name="kept")
    for url in (REQUEST_URL, "/tokens/", f"/tokens/{token.pk}/revoke"):
        assert 'name="csrfmiddlewaretoken"' in me.get(url).content.decode(), url
