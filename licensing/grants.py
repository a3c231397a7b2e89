"""Signed license grants as compact JWS (ES256/ES384 with `kid`), the JWKS that verifies them, a
signed revocation list, and offline verification from those two documents alone.

Claims of a grant:
    iss  the service's SITE_URL          sub  the user id (a string)
    jti  the grant id (UUID)              iat / exp  issue time / optional expiry (seconds)
    model  "org/name"                     artifacts  names, or ["*"] for every artifact
    license  {"id": slug, "version": ..., "sha256": sha256 of the text accepted}
"""

import json
from datetime import datetime
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

# Verification needs no Django and lives beside, shared with the `weightgate` CLI; these names
# stay importable from here.
from licensing.grant_format import GRANT_TYPE as GRANT_TYPE
from licensing.grant_format import REVOCATIONS_TYPE as REVOCATIONS_TYPE
from licensing.grant_format import GrantCheck as GrantCheck
from licensing.grant_format import grant_verify_offline as grant_verify_offline
from licensing.keys import signing_key_private, signing_key_public
from licensing.models import SigningKey


def _sign(claims: dict[str, Any], *, key: SigningKey, typ: str) -> str:
    return jwt.encode(
        claims,
        signing_key_private(key),
        algorithm=key.algorithm,
        headers={"kid": key.kid, "typ": typ},
    )


def grant_token(
    *,
    key: SigningKey,
    issuer: str,
    grant_id: str,
    user_id: int,
    model: str,
    artifacts: list[str],
    license_id: str,
    license_version: str,
    license_sha256: str,
    issued_at: datetime,
    expires_at: datetime | None,
) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": str(user_id),
        "jti": grant_id,
        "iat": int(issued_at.timestamp()),
        "model": model,
        "artifacts": artifacts,
        "license": {"id": license_id, "version": license_version, "sha256": license_sha256},
    }
    if expires_at is not None:
        claims["exp"] = int(expires_at.timestamp())
    return _sign(claims, key=key, typ=GRANT_TYPE)


def revocation_list_token(
    *, key: SigningKey, issuer: str, revoked: list[str], issued_at: datetime, expires_at: datetime
) -> str:
    """The ids of revoked grants, signed, with a short expiry: a client holding a list past its
    `exp` knows it is stale and must fetch a new one before trusting any grant."""
    return _sign(
        {
            "iss": issuer,
            "iat": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "revoked": sorted(revoked),
        },
        key=key,
        typ=REVOCATIONS_TYPE,
    )


def jwks_document(keys: list[SigningKey]) -> dict[str, Any]:
    """RFC 7517 key set: what any JOSE library needs to verify our grants and lists."""
    entries = []
    for key in keys:
        jwk = json.loads(ECAlgorithm.to_jwk(signing_key_public(key)))
        jwk.update({"kid": key.kid, "alg": key.algorithm, "use": "sig"})
        entries.append(jwk)
    return {"keys": entries}
