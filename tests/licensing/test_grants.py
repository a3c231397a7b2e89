"""Signed license grants: they verify with an independent JOSE library from the published JWKS
alone, survive key rotation, and stop working the moment they are revoked or suspended; offline
verification gives a reason a person can act on for every way a grant can fail."""

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.management import CommandError, call_command
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from config.errors import DomainError, NotAllowed
from licensing import access
from licensing.grants import grant_verify_offline
from licensing.keys import signing_key_active, signing_key_ensure, signing_key_rotate
from licensing.models import AccessRequest, AuditEvent, Grant
from licensing.publishing import jwks_current, revocation_list_current, revocation_list_publish
from licensing.selectors import grant_live_for, grant_signing_keys, revoked_grant_ids
from tests.factories import make_user
from tests.licensing.factories import gated_model, isolated_cache, submit


@pytest.fixture(autouse=True)
def _own_cache(settings):
    isolated_cache(settings)


@pytest.fixture
def model(staff):
    return gated_model(actor=staff, mode="auto")


def grant_for(user, model) -> Grant:
    return Grant.objects.get(request=submit(user, model), revoked_at__isnull=True)


def request_of(grant: Grant) -> AccessRequest:
    assert grant.request is not None
    return grant.request


def fetch_jwks(api) -> Any:
    response = api.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.json()


def fetch_revocations(api) -> Any:
    response = api.get("/.well-known/weightgate-revocations.jwt")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jwt"
    return response.content.decode()


def joserfc_decode(token: str, jwks: Any) -> jwt.Token:
    """Verify with joserfc, knowing nothing of Weightgate but its published key set."""
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])


def kids(jwks: Any) -> set[str]:
    return {k["kid"] for k in jwks["keys"]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def offline(token: str, *, now: datetime | None = None, jwks=None, revocations=None):
    return grant_verify_offline(
        token,
        jwks=jwks if jwks is not None else jwks_current(),
        revocations=revocations if revocations is not None else revocation_list_current(),
        now=now or timezone.now(),
    )


# --- the token and the JWKS ----------------------------------------------------------------------


def test_a_grant_verifies_with_joserfc_from_the_published_jwks_alone(api, staff, outsider):
    model = gated_model(actor=staff, mode="auto", grant_ttl_days=30)
    grant = grant_for(outsider, model)
    license = grant.license

    decoded = joserfc_decode(grant.token, fetch_jwks(api))

    assert decoded.header == {"alg": "ES256", "kid": grant.kid, "typ": "wg-grant+jwt"}
    assert grant.kid == signing_key_active(purpose="grants").kid
    claims = decoded.claims
    assert claims == {
        "iss": settings.SITE_URL,
        "sub": str(outsider.pk),
        "jti": str(grant.jti),
        "iat": int(grant.issued_at.timestamp()),
        "exp": claims["iat"] + 30 * 24 * 3600,
        "model": "acme/tiny",
        "artifacts": ["*"],
        "license": {"id": license.slug, "version": "1.0", "sha256": license.text_sha256},
    }
    assert grant.expires_at is not None
    assert claims["exp"] == int(grant.expires_at.timestamp())


def test_a_grant_without_ttl_has_no_expiry(api, model, outsider):
    claims = joserfc_decode(grant_for(outsider, model).token, fetch_jwks(api)).claims

    assert "exp" not in claims
    assert Grant.objects.get(jti=claims["jti"]).expires_at is None


def test_the_jwks_is_public_and_holds_only_public_grant_keys(api, model):
    models_key = signing_key_ensure(purpose="models")

    response = api.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=300"
    (entry,) = response.json()["keys"]
    assert entry["kid"] == signing_key_active(purpose="grants").kid != models_key.kid
    assert {k: entry[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
    }
    assert set(entry) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # no private "d"


@pytest.mark.parametrize("part", ["payload", "signature"])
def test_a_tampered_grant_fails_with_joserfc_and_with_ours(api, model, outsider, part):
    token = grant_for(outsider, model).token
    header, payload, signature = token.split(".")
    if part == "payload":
        claims = b64url_json(payload)
        claims["artifacts"] = ["base", "instruct", "vision"]
        payload = b64url(json.dumps(claims).encode())
    else:
        raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
        raw[5] ^= 0x01
        signature = b64url(bytes(raw))
    tampered = f"{header}.{payload}.{signature}"
    jwks = fetch_jwks(api)

    with pytest.raises(BadSignatureError):
        joserfc_decode(tampered, jwks)
    check = offline(tampered, jwks=jwks)

    assert not check.valid
    assert check.reason == "bad signature: the grant was altered or not signed by us"
    assert check.claims == {}


def test_an_unsigned_grant_is_refused_whatever_its_header_says(model, outsider):
    real = grant_for(outsider, model).token
    header = b64url_json(real.split(".")[0])
    forged = ".".join(
        [b64url(json.dumps({**header, "alg": "none"}).encode()), real.split(".")[1], ""]
    )

    check = offline(forged)

    assert not check.valid
    assert check.reason.startswith("not a valid grant:")


# --- key rotation ------------------------------------------------------------------------------


def test_rotation_keeps_old_grants_valid_until_they_are_revoked(api, model, outsider, staff):
    old = grant_for(outsider, model)

    new_key = signing_key_rotate(purpose="grants", actor=staff)
    newer = grant_for(make_user("newcomer"), model)
    jwks = fetch_jwks(api)

    assert kids(jwks) == {old.kid, new_key.kid}
    assert newer.kid == new_key.kid != old.kid
    assert joserfc_decode(old.token, jwks).header["kid"] == old.kid
    assert joserfc_decode(newer.token, jwks).header["kid"] == new_key.kid
    assert offline(old.token, jwks=jwks).valid
    assert offline(newer.token, jwks=jwks).valid

    access.grant_revoke(grant=old, actor=staff, reason="rotation test")

    assert kids(fetch_jwks(api)) == {new_key.kid}


def test_a_retired_key_leaves_the_jwks_once_its_grants_have_expired(api, staff, outsider):
    model = gated_model(actor=staff, mode="auto", grant_ttl_days=1)
    old = grant_for(outsider, model)
    new_key = signing_key_rotate(purpose="grants", actor=staff)

    assert kids(fetch_jwks(api)) == {old.kid, new_key.kid}
    with time_machine.travel(old.issued_at + timedelta(days=1, seconds=1), tick=False):
        assert kids(fetch_jwks(api)) == {new_key.kid}


def test_a_retired_key_without_grants_is_not_published(staff):
    first = signing_key_ensure(purpose="grants")

    second = signing_key_rotate(purpose="grants", actor=staff)

    assert grant_signing_keys() == [second]
    assert first.kid not in kids(jwks_current())


# --- revocation ---------------------------------------------------------------------------------


def test_a_revoked_grant_is_in_the_signed_list_at_once_and_gives_no_access(
    api, model, outsider, staff, django_capture_on_commit_callbacks
):
    grant = grant_for(outsider, model)
    kept = grant_for(make_user("keeper"), model)
    before = joserfc_decode(fetch_revocations(api), fetch_jwks(api))  # now cached
    assert before.claims["revoked"] == []

    with django_capture_on_commit_callbacks(execute=True):
        access.grant_revoke(grant=grant, actor=staff, reason="  token posted publicly  ")

    assert grant_live_for(user=outsider, model_id=model.pk) is None
    assert grant_live_for(user=kept.user, model_id=model.pk) == kept
    after = joserfc_decode(fetch_revocations(api), fetch_jwks(api))
    assert after.header == {
        "alg": "ES256",
        "kid": signing_key_active(purpose="grants").kid,
        "typ": "wg-revocations+jwt",
    }
    assert after.claims["revoked"] == [str(grant.jti)]
    assert after.claims["iss"] == settings.SITE_URL
    assert after.claims["exp"] - after.claims["iat"] == settings.REVOCATION_LIST_TTL_SECONDS
    grant.refresh_from_db()
    assert grant.revoked_reason == "token posted publicly"
    assert AuditEvent.objects.filter(action="grant.revoked", subject_id=str(grant.jti)).exists()


def test_rejecting_and_cancelling_also_publish_the_revocation(
    api, model, outsider, staff, django_capture_on_commit_callbacks
):
    rejected = grant_for(outsider, model)
    cancelled = grant_for(make_user("other"), model)
    fetch_revocations(api)  # cached before the revocations

    with django_capture_on_commit_callbacks(execute=True):
        access.access_request_reject(request=request_of(rejected), reviewer=staff, reason="no")
    with django_capture_on_commit_callbacks(execute=True):
        access.access_request_cancel(request=request_of(cancelled), reviewer=staff)

    listed = joserfc_decode(fetch_revocations(api), fetch_jwks(api)).claims["revoked"]
    assert sorted(listed) == sorted([str(rejected.jti), str(cancelled.jti)])


def test_revoking_needs_a_reason_and_happens_once(model, outsider, staff):
    grant = grant_for(outsider, model)

    with pytest.raises(DomainError) as no_reason:
        access.grant_revoke(grant=grant, actor=staff, reason="  ")
    access.grant_revoke(grant=grant, actor=staff, reason="first")
    with pytest.raises(NotAllowed) as again:
        access.grant_revoke(grant=grant, actor=staff, reason="second")

    assert no_reason.value.code == "reason_required"
    assert again.value.code == "already_revoked"
    grant.refresh_from_db()
    assert grant.revoked_reason == "first"


def test_expired_revoked_grants_leave_the_list(staff, outsider):
    model = gated_model(actor=staff, mode="auto", grant_ttl_days=1)
    grant = grant_for(outsider, model)
    access.grant_revoke(grant=grant, actor=staff, reason="x")

    assert revoked_grant_ids() == [str(grant.jti)]
    assert revoked_grant_ids(now=grant.issued_at + timedelta(days=2)) == []


# --- offline verification: every reason -----------------------------------------------------------


def test_offline_verification_of_a_good_grant(model, outsider):
    grant = grant_for(outsider, model)

    check = offline(grant.token)

    assert check.valid
    assert check.reason == ""
    assert check.claims["jti"] == str(grant.jti)


def test_offline_verification_refuses_a_revoked_grant(model, outsider, staff):
    grant = grant_for(outsider, model)
    access.grant_revoke(grant=grant, actor=staff, reason="x")

    check = offline(grant.token, revocations=revocation_list_publish())

    assert (check.valid, check.reason) == (False, "revoked")
    assert check.claims["jti"] == str(grant.jti)


def test_offline_verification_refuses_an_expired_grant(staff, outsider):
    model = gated_model(actor=staff, mode="auto", grant_ttl_days=1)
    grant = grant_for(outsider, model)
    assert grant.expires_at is not None
    assert offline(grant.token).valid

    with time_machine.travel(grant.expires_at + timedelta(seconds=1), tick=False):
        check = offline(grant.token, revocations=revocation_list_publish())
        assert grant_live_for(user=outsider, model_id=model.pk) is None

    assert (check.valid, check.reason) == (False, "expired")


def test_offline_verification_tolerates_a_client_clock_a_little_behind(model, outsider):
    """Times are judged against the `now` given, not the verifier's wall clock: a list signed a
    moment ago is not "from the future" for a client whose clock runs 30 seconds slow."""
    token = grant_for(outsider, model).token
    listing = revocation_list_publish()

    with time_machine.travel(timezone.now() - timedelta(seconds=30), tick=False):
        check = offline(token, revocations=listing)

    assert (check.valid, check.reason) == (True, "")


def test_offline_verification_refuses_a_stale_revocation_list(model, outsider):
    token = grant_for(outsider, model).token
    listing = revocation_list_publish()
    later = timezone.now() + timedelta(seconds=settings.REVOCATION_LIST_TTL_SECONDS + 1)

    check = offline(token, revocations=listing, now=later)

    assert (check.valid, check.reason) == (False, "stale revocation list: fetch a fresh one")


def test_offline_verification_refuses_a_grant_signed_by_an_unknown_key(model, outsider, staff):
    grant = grant_for(outsider, model)
    new_key = signing_key_rotate(purpose="grants", actor=staff)
    only_new = {"keys": [k for k in jwks_current()["keys"] if k["kid"] == new_key.kid]}

    check = offline(grant.token, jwks=only_new, revocations=revocation_list_publish())

    assert not check.valid
    assert check.reason == f"unknown signing key {grant.kid!r}: not in the key set"


def test_offline_verification_refuses_a_list_that_does_not_verify(model, outsider):
    token = grant_for(outsider, model).token
    header, payload, signature = revocation_list_publish().split(".")
    emptied = b64url(json.dumps({**b64url_json(payload), "revoked": []}).encode())

    forged_list = offline(token, revocations=f"{header}.{emptied}.{signature}")
    grant_as_list = offline(token, revocations=token)
    list_as_grant = offline(revocation_list_current())

    assert forged_list.reason.startswith("revocation list does not verify: ")
    assert grant_as_list.reason.startswith("revocation list does not verify: not a wg-revocat")
    assert list_as_grant.reason.startswith("not a valid grant: not a wg-grant+jwt")
    assert [forged_list.valid, grant_as_list.valid, list_as_grant.valid] == [False] * 3


# --- who holds access now ------------------------------------------------------------------------


def test_live_grant_is_for_its_holder_only(model, outsider):
    grant = grant_for(outsider, model)

    assert grant_live_for(user=outsider, model_id=model.pk) == grant
    assert grant_live_for(user=make_user("someone"), model_id=model.pk) is None
    assert grant_live_for(user=AnonymousUser(), model_id=model.pk) is None


def test_suspension_for_a_model_stops_its_grants_until_resumed(model, outsider, staff):
    grant = grant_for(outsider, model)
    revoked = grant_for(make_user("revoked"), model)
    access.grant_revoke(grant=revoked, actor=staff, reason="x")

    suspended = access.grants_suspend_for_model(model=model, actor=staff, reason="withdrawn")

    assert suspended == 1  # the revoked one is left alone
    assert grant_live_for(user=outsider, model_id=model.pk) is None
    assert access.grants_suspend_for_model(model=model, actor=staff, reason="again") == 0
    assert AuditEvent.objects.filter(action="grant.suspended").count() == 1
    access.grants_resume_for_model(model=model, actor=staff, reason="false alarm")
    assert grant_live_for(user=outsider, model_id=model.pk) == grant
    assert grant_live_for(user=revoked.user, model_id=model.pk) is None


def test_withdrawing_an_artifact_suspends_the_models_grants(model, outsider, staff):
    from release.services.unlocks import artifact_withdraw

    grant_for(outsider, model)
    artifact = model.versions.get().artifacts.get(name="base")

    artifact_withdraw(actor=staff, artifact=artifact, reason="unsafe outputs found")

    assert grant_live_for(user=outsider, model_id=model.pk) is None
    assert Grant.objects.get(user=outsider).suspended_at is not None


# --- manage.py verify_grant ----------------------------------------------------------------------


def verify_grant(*args: str) -> str:
    out = io.StringIO()
    call_command("verify_grant", *args, stdout=out)
    return out.getvalue()


def test_verify_grant_command_reports_a_valid_grant(model, outsider):
    grant = grant_for(outsider, model)

    output = verify_grant(grant.token)

    assert output.strip() == (
        f"grant valid: {grant.jti} for user {outsider.pk} on acme/tiny (*) under acme-tiny 1.0, "
        "no expiry"
    )


def test_verify_grant_command_refuses_a_revoked_grant(model, outsider, staff):
    grant = grant_for(outsider, model)
    access.grant_revoke(grant=grant, actor=staff, reason="x")
    revocation_list_publish()

    with pytest.raises(CommandError, match="^grant NOT valid: revoked$"):
        verify_grant(grant.token)


def test_verify_grant_command_works_from_saved_documents(model, outsider, tmp_path, monkeypatch):
    grant = grant_for(outsider, model)
    (tmp_path / "grant.jwt").write_text(grant.token + "\n")
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_current()))
    (tmp_path / "revocations.jwt").write_text(revocation_list_current())
    (tmp_path / "empty-jwks.json").write_text('{"keys": []}')
    saved = ["--jwks", f"@{tmp_path / 'jwks.json'}", "--revocations"]

    assert "grant valid" in verify_grant(
        f"@{tmp_path / 'grant.jwt'}", *saved, f"@{tmp_path}/revocations.jwt"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(grant.token))
    assert "grant valid" in verify_grant("-", *saved, f"@{tmp_path}/revocations.jwt")
    with pytest.raises(CommandError, match="revocation list does not verify: unknown signing key"):
        verify_grant(grant.token, "--jwks", f"@{tmp_path / 'empty-jwks.json'}")


def test_verify_grant_command_refuses_bad_inputs(model, outsider, tmp_path):
    token = grant_for(outsider, model).token
    (tmp_path / "bad.json").write_text("{not json")

    with pytest.raises(CommandError, match="^--jwks is not JSON"):
        verify_grant(token, "--jwks", f"@{tmp_path / 'bad.json'}")
    with pytest.raises(CommandError, match="^cannot read .*missing.jwt"):
        verify_grant(f"@{tmp_path / 'missing.jwt'}")
    with pytest.raises(CommandError, match="^grant NOT valid: not a valid grant"):
        verify_grant("not-a-token")


def test_verify_grant_command_reports_expiry(staff, outsider):
    model = gated_model(actor=staff, mode="auto", grant_ttl_days=7)
    grant = grant_for(outsider, model)
    assert grant.expires_at is not None

    output = verify_grant(grant.token)

    assert output.strip().endswith(f", expires {int(grant.expires_at.timestamp())}")
    assert grant.expires_at > datetime.now(UTC) + timedelta(days=6)
