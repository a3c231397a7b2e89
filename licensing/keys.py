"""Service-managed signing keys: one active ECDSA key per purpose, rotated by an admin.

A private key is stored only as AES-256-GCM ciphertext under `settings.SIGNING_MASTER_KEY`, with
the key's kid as associated data, so a ciphertext copied onto another row does not decrypt. The
clear private key lives in memory for one signature and is never logged, audited or returned by
anything that leaves the process. Retired keys are kept: signatures they made still verify.
"""

import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from licensing.models import SigningKey
from licensing.services import audit_record

Actor = AbstractBaseUser | AnonymousUser | None

# Curve name -> (curve, JOSE algorithm). P-521 and Ed25519 are left out: ES512 is rare in JOSE
# libraries, and `model_signing` refuses Ed25519.
CURVES: dict[str, tuple[type[ec.EllipticCurve], str]] = {
    "P-256": (ec.SECP256R1, SigningKey.Algorithm.ES256),
    "P-384": (ec.SECP384R1, SigningKey.Algorithm.ES384),
}
_NONCE_BYTES = 12  # GCM's standard nonce: random for each encryption, stored before the ciphertext


class SigningKeyUnavailable(DomainError):
    """No key can sign: none is active, or the stored one cannot be decrypted. Both are for an
    operator to fix, not for the caller to retry."""

    code = "signing_key_unavailable"
    status = 503


def _public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _kid(purpose: str, public_key: ec.EllipticCurvePublicKey) -> str:
    """Derived from the public key, so the same kid can never name two different keys."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{purpose}-{hashlib.sha256(der).hexdigest()[:16]}"


def _encrypt(*, kid: str, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(settings.SIGNING_MASTER_KEY).encrypt(nonce, der, kid.encode())


def signing_key_private(key: SigningKey) -> ec.EllipticCurvePrivateKey:
    """Decrypt a key's private half for one signing operation. Keep the result in a local
    variable; do not store, log or return it further."""
    blob = bytes(key.private_key_encrypted)
    try:
        der = AESGCM(settings.SIGNING_MASTER_KEY).decrypt(
            blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], key.kid.encode()
        )
    except InvalidTag:
        # Deliberately vague about which: the master key and the row look the same from here.
        raise SigningKeyUnavailable(
            f"signing key {key.kid} cannot be decrypted: SIGNING_MASTER_KEY is not the key it "
            "was encrypted with, or its stored ciphertext was altered or belongs to another key",
            code="signing_key_undecryptable",
        ) from None
    private_key = serialization.load_der_private_key(der, password=None)
    if (
        not isinstance(private_key, ec.EllipticCurvePrivateKey)
        or _public_pem(private_key.public_key()) != key.public_pem
    ):
        raise SigningKeyUnavailable(
            f"signing key {key.kid}: the decrypted private key does not match its public key",
            code="signing_key_mismatch",
        )
    return private_key


def signing_key_public(key: SigningKey) -> ec.EllipticCurvePublicKey:
    public_key = serialization.load_pem_public_key(key.public_pem.encode())
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SigningKeyUnavailable(f"signing key {key.kid} is not an ECDSA key")
    return public_key


def signing_key_active(*, purpose: str) -> SigningKey:
    """The key that signs for `purpose` now. Never creates one: keys are an admin's decision."""
    key = SigningKey.objects.filter(purpose=purpose, state=SigningKey.State.ACTIVE).first()
    if key is None:
        raise SigningKeyUnavailable(
            f"no active signing key for '{purpose}': an admin must run "
            f"`manage.py signing_key rotate --purpose {purpose}`",
            code="no_signing_key",
        )
    return key


def signing_key_rotate(*, purpose: str, actor: Actor, curve: str = "P-256") -> SigningKey:
    """Create a new active key for `purpose` and retire the one it replaces, in one transaction:
    at no moment do two keys (or, once there was one, no key) sign for the same purpose."""
    if purpose not in SigningKey.Purpose.values:
        choices = ", ".join(SigningKey.Purpose.values)
        raise DomainError(f"purpose must be one of {choices}", code="invalid_purpose")
    if curve not in CURVES:
        raise DomainError(f"curve must be one of {', '.join(CURVES)}", code="invalid_curve")
    curve_class, algorithm = CURVES[curve]
    private_key = ec.generate_private_key(curve_class())
    public_key = private_key.public_key()
    kid = _kid(purpose, public_key)
    now = timezone.now()
    with transaction.atomic():
        previous = list(
            SigningKey.objects.select_for_update().filter(
                purpose=purpose, state=SigningKey.State.ACTIVE
            )
        )
        # Retire first: the partial unique index is checked at each statement, not at commit.
        for old in previous:
            old.state = SigningKey.State.RETIRED
            old.retired_at = now
            old.save(update_fields=["state", "retired_at"])
        try:
            with transaction.atomic():
                key = SigningKey.objects.create(
                    purpose=purpose,
                    kid=kid,
                    algorithm=algorithm,
                    public_pem=_public_pem(public_key),
                    private_key_encrypted=_encrypt(kid=kid, private_key=private_key),
                    state=SigningKey.State.ACTIVE,
                    created_at=now,
                )
        except IntegrityError as error:
            # Another rotation for the same purpose committed a new key while this one waited on
            # the lock: its key stands, this one is dropped rather than silently replacing it.
            raise NotAllowed(
                f"another rotation of the '{purpose}' signing key finished at the same time; "
                "check `manage.py signing_key list` before rotating again",
                code="concurrent_rotation",
            ) from error
        audit_record(
            actor=actor,
            action="signing_key.rotated",
            subject_type="signing_key",
            subject_id=key.kid,
            data={
                "purpose": purpose,
                "kid": key.kid,
                "algorithm": algorithm,
                "public_pem": key.public_pem,
                "retired": [old.kid for old in previous],
            },
        )
    return key


def signing_key_retire(*, key: SigningKey, actor: Actor) -> SigningKey:
    """Stop a key from signing (a compromise, or the end of a purpose). Its public half stays
    published so that what it signed still verifies; signing for its purpose fails until an
    admin rotates in a new key."""
    with transaction.atomic():
        locked = SigningKey.objects.select_for_update().get(pk=key.pk)
        if locked.state != SigningKey.State.ACTIVE:
            raise NotAllowed(f"signing key {locked.kid} is already retired", code="not_active")
        locked.state = SigningKey.State.RETIRED
        locked.retired_at = timezone.now()
        locked.save(update_fields=["state", "retired_at"])
        audit_record(
            actor=actor,
            action="signing_key.retired",
            subject_type="signing_key",
            subject_id=locked.kid,
            data={"purpose": locked.purpose, "kid": locked.kid},
        )
    return locked


def signing_key_ensure(*, purpose: str, curve: str = "P-256") -> SigningKey:
    """The active key for `purpose`, created if there is none. For the demo seed and tests only:
    in production, keys come from `manage.py signing_key rotate`."""
    key = SigningKey.objects.filter(purpose=purpose, state=SigningKey.State.ACTIVE).first()
    if key is not None:
        return key
    try:
        return signing_key_rotate(purpose=purpose, actor=None, curve=curve)
    except NotAllowed:
        return signing_key_active(purpose=purpose)  # a concurrent ensure created it
