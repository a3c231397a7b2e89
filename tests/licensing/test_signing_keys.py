"""Signing keys: one active key per purpose, rotated by an admin, private halves encrypted at rest
under SIGNING_MASTER_KEY and bound to their row."""

import base64
import hashlib
import json
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from config import settings as config_settings
from config.errors import DomainError, NotAllowed
from licensing.keys import (
    SigningKeyUnavailable,
    signing_key_active,
    signing_key_ensure,
    signing_key_private,
    signing_key_retire,
    signing_key_rotate,
)
from licensing.models import AuditEvent, SigningKey
from licensing.selectors import audit_chain_verify


def private_der(key: SigningKey) -> bytes:
    return signing_key_private(key).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_secrets(key: SigningKey) -> list[bytes]:
    """Every form the private key could leak in: DER, PEM, its raw scalar, and their encodings."""
    private = signing_key_private(key)
    der = private_der(key)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    scalar = private.private_numbers().private_value.to_bytes((private.curve.key_size + 7) // 8)
    return [der, pem, scalar, base64.b64encode(der), der.hex().encode(), scalar.hex().encode()]


@pytest.mark.django_db
def test_rotation_keeps_one_active_key(staff):
    first = signing_key_rotate(purpose="models", actor=staff)

    second = signing_key_rotate(purpose="models", actor=staff)

    first.refresh_from_db()
    assert first.state == SigningKey.State.RETIRED
    assert first.retired_at == second.created_at
    assert second.state == SigningKey.State.ACTIVE
    assert second.retired_at is None
    assert list(SigningKey.objects.filter(purpose="models", state="active")) == [second]
    assert signing_key_active(purpose="models") == second


@pytest.mark.django_db
def test_purposes_rotate_independently(staff):
    grants = signing_key_rotate(purpose="grants", actor=staff)
    models = signing_key_rotate(purpose="models", actor=staff, curve="P-384")

    assert signing_key_active(purpose="grants") == grants
    assert signing_key_active(purpose="models") == models
    assert (grants.algorithm, models.algorithm) == ("ES256", "ES384")


@pytest.mark.django_db
def test_kid_is_derived_from_the_public_key():
    key = signing_key_ensure(purpose="grants")

    public = serialization.load_pem_public_key(key.public_pem.encode())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.kid == "grants-" + hashlib.sha256(der).hexdigest()[:16]


@pytest.mark.django_db
def test_rotation_refuses_unknown_purpose_or_curve(staff):
    with pytest.raises(DomainError, match="purpose must be one of grants, models"):
        signing_key_rotate(purpose="tokens", actor=staff)
    with pytest.raises(DomainError, match="curve must be one of P-256, P-384"):
        signing_key_rotate(purpose="models", actor=staff, curve="Ed25519")

    assert not SigningKey.objects.exists()


@pytest.mark.django_db
def test_database_refuses_two_active_keys_for_one_purpose():
    """The invariant holds even for code that goes around the service."""
    key = signing_key_ensure(purpose="models")

    with (
        pytest.raises(IntegrityError, match="signing_key_one_active_per_purpose"),
        transaction.atomic(),
    ):
        SigningKey.objects.create(
            purpose="models",
            kid="models-0000000000000000",
            algorithm="ES256",
            public_pem=key.public_pem,
            private_key_encrypted=b"\0" * 64,
        )


@pytest.mark.django_db
def test_database_refuses_a_retired_key_without_a_retirement_time():
    key = signing_key_ensure(purpose="models")

    with (
        pytest.raises(IntegrityError, match="signing_key_retired_at_matches_state"),
        transaction.atomic(),
    ):
        SigningKey.objects.filter(pk=key.pk).update(state="retired")


@pytest.mark.django_db(transaction=True)
def test_concurrent_rotations_leave_one_active_key():
    """Rotations racing on real connections: each either wins or is refused, never doubles up."""
    signing_key_ensure(purpose="models")
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def rotate() -> None:
        try:
            start.wait()
            signing_key_rotate(purpose="models", actor=None)
            outcomes.append("rotated")
        except NotAllowed as error:
            outcomes.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(outcomes) <= {"rotated", "concurrent_rotation"}
    assert "rotated" in outcomes
    assert SigningKey.objects.filter(purpose="models", state="active").count() == 1
    assert SigningKey.objects.count() == 1 + outcomes.count("rotated")
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_private_key_is_stored_encrypted_and_decrypts_to_its_public_key():
    key = signing_key_ensure(purpose="models")
    stored = bytes(SigningKey.objects.get(pk=key.pk).private_key_encrypted)

    for secret in private_secrets(key):
        assert secret not in stored
    assert b"PRIVATE KEY" not in stored
    decrypted_public = signing_key_private(key).public_key()
    assert (
        decrypted_public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        == key.public_pem
    )


@pytest.mark.django_db
def test_same_key_encrypts_differently_each_time():
    """A fresh nonce per encryption: two rows never share a ciphertext prefix or keystream."""
    first = signing_key_ensure(purpose="models")
    second = signing_key_ensure(purpose="grants")

    assert bytes(first.private_key_encrypted)[:12] != bytes(second.private_key_encrypted)[:12]


@pytest.mark.django_db
def test_wrong_master_key_fails_with_a_clear_error(settings):
    key = signing_key_ensure(purpose="models")
    settings.SIGNING_MASTER_KEY = bytes(range(32))

    with pytest.raises(SigningKeyUnavailable, match="SIGNING_MASTER_KEY is not the key") as error:
        signing_key_private(SigningKey.objects.get(pk=key.pk))

    assert error.value.code == "signing_key_undecryptable"
    assert key.kid in error.value.message


@pytest.mark.django_db
def test_ciphertext_swapped_between_keys_does_not_decrypt():
    """The kid is the associated data: a row cannot borrow another row's private key."""
    grants = signing_key_ensure(purpose="grants")
    models = signing_key_ensure(purpose="models")
    SigningKey.objects.filter(pk=models.pk).update(
        private_key_encrypted=grants.private_key_encrypted
    )

    with pytest.raises(
        SigningKeyUnavailable, match=f"signing key {models.kid} cannot be decrypted"
    ):
        signing_key_private(SigningKey.objects.get(pk=models.pk))


@pytest.mark.django_db
def test_ciphertext_moved_with_its_kid_fails_the_public_key_check():
    """Copying kid and ciphertext together decrypts, but the row's public key gives it away."""
    grants = signing_key_ensure(purpose="grants")
    models = signing_key_ensure(purpose="models")
    SigningKey.objects.filter(pk=grants.pk).delete()
    SigningKey.objects.filter(pk=models.pk).update(
        kid=grants.kid, private_key_encrypted=grants.private_key_encrypted
    )

    with pytest.raises(SigningKeyUnavailable, match="does not match its public key"):
        signing_key_private(SigningKey.objects.get(pk=models.pk))


@pytest.mark.django_db
def test_signing_without_a_key_tells_the_admin_what_to_run():
    with pytest.raises(
        SigningKeyUnavailable, match=r"manage.py signing_key rotate --purpose models"
    ):
        signing_key_active(purpose="models")


@pytest.mark.django_db
def test_ensure_creates_a_key_only_once():
    first = signing_key_ensure(purpose="models")

    again = signing_key_ensure(purpose="models")

    assert again == first
    assert SigningKey.objects.count() == 1


@pytest.mark.django_db
def test_retiring_the_active_key_stops_signing_for_its_purpose(staff):
    key = signing_key_rotate(purpose="grants", actor=staff)

    retired = signing_key_retire(key=key, actor=staff)

    assert retired.state == SigningKey.State.RETIRED
    assert retired.retired_at is not None
    with pytest.raises(SigningKeyUnavailable, match="no active signing key for 'grants'"):
        signing_key_active(purpose="grants")
    with pytest.raises(NotAllowed, match="already retired"):
        signing_key_retire(key=key, actor=staff)


@pytest.mark.django_db
def test_rotation_and_retirement_are_audited_without_private_material(staff):
    first = signing_key_rotate(purpose="models", actor=staff)
    second = signing_key_rotate(purpose="models", actor=staff, curve="P-384")
    signing_key_retire(key=second, actor=staff)

    events = list(AuditEvent.objects.filter(subject_type="signing_key"))

    assert [(e.action, e.subject_id) for e in events] == [
        ("signing_key.rotated", first.kid),
        ("signing_key.rotated", second.kid),
        ("signing_key.retired", second.kid),
    ]
    assert all(e.actor == "staff" for e in events)
    assert events[1].data["retired"] == [first.kid]
    assert events[1].data["algorithm"] == "ES384"
    recorded = json.dumps([e.data for e in events]).encode()
    for key in (first, second):
        for secret in private_secrets(key):
            assert secret not in recorded
        assert base64.b64encode(bytes(key.private_key_encrypted)) not in recorded
    assert b"PRIVATE" not in recorded
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_signing_key_command_rotates_and_lists_without_private_material(capsys):
    call_command("signing_key", "rotate", "--purpose", "models")
    call_command("signing_key", "rotate", "--purpose", "models", "--curve", "P-384")
    call_command("signing_key", "rotate", "--purpose", "grants")
    capsys.readouterr()

    call_command("signing_key", "list")

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["KID", "PURPOSE", "ALG", "STATE", "CREATED", "RETIRED"]
    keys = list(SigningKey.objects.all())
    assert len(lines) == 1 + len(keys)
    for key in keys:
        (line,) = [line for line in lines if line.startswith(key.kid)]
        assert line.split()[1:4] == [key.purpose, key.algorithm, key.state]
        stored = bytes(key.private_key_encrypted)
        assert base64.b64encode(stored).decode() not in out
        assert stored.hex() not in out
        for secret in private_secrets(key):
            assert secret.decode("latin-1") not in out
    assert "PRIVATE" not in out
    assert sorted(line.split()[3] for line in lines[1:]) == ["active", "active", "retired"]


@pytest.mark.django_db
def test_signing_key_command_retires_by_kid_and_refuses_bad_input(capsys):
    key = signing_key_ensure(purpose="grants")

    call_command("signing_key", "retire", key.kid)

    assert f"retired {key.kid}" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already retired"):
        call_command("signing_key", "retire", key.kid)
    with pytest.raises(CommandError, match="no signing key 'grants-nope'"):
        call_command("signing_key", "retire", "grants-nope")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("signing_key", "rotate", "--purpose", "tokens")


@pytest.mark.django_db
def test_admin_shows_keys_read_only_without_the_private_key(client, admin_user):
    key = signing_key_ensure(purpose="models")
    client.force_login(admin_user)

    listing = client.get("/admin/licensing/signingkey/")
    page = client.get(f"/admin/licensing/signingkey/{key.pk}/change/")

    assert key.kid in listing.content.decode()
    assert page.status_code == 200
    body = page.content.decode()
    assert key.kid in body
    assert "private" not in body.lower()
    assert 'name="_save"' not in body
    assert client.get("/admin/licensing/signingkey/add/").status_code == 403


def test_master_key_setting_must_be_base64_of_32_bytes(monkeypatch, tmp_path):
    monkeypatch.setenv("WG_MASTER", "not base64!")
    with pytest.raises(ImproperlyConfigured, match="WG_MASTER is not valid base64"):
        config_settings._signing_master_key("WG_MASTER")

    short = base64.b64encode(b"k" * 16).decode()
    monkeypatch.setenv("WG_MASTER", short)
    with pytest.raises(ImproperlyConfigured, match="base64 of 32 bytes") as error:
        config_settings._signing_master_key("WG_MASTER")
    assert short not in str(error.value)

    monkeypatch.delenv("WG_MASTER")
    secret = tmp_path / "master"
    secret.write_text(base64.b64encode(b"m" * 32).decode() + "\n")
    monkeypatch.setenv("WG_MASTER_FILE", str(secret))
    assert config_settings._signing_master_key("WG_MASTER") == b"m" * 32
