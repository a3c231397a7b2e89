"""Signed license grants as compact JWS (ES256/ES384 with `kid`), the JWKS that verifies them, a
signed revocation list, and offline verification from those two documents alone.

Claims of a grant:
    iss  the service's SITE_URL          sub  the user id (a string)
    jti  the grant id (UUID)              iat / exp  issue time / optional expiry (seconds)
    model  "org/name"                     artifacts  names, or ["*"] for every artifact
    license  {"id": slug, "version": ..., "sha256": sha256 of the text accepted}
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

from licensing.keys import signing_key_private, signing_key_public
from licensing.models import SigningKey

GRANT_TYPE = "wg-grant+jwt"
REVOCATIONS_TYPE = "wg-revocations+jwt"


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


@dataclass(frozen=True)
class GrantCheck:
    valid: bool
    reason: str  # why not, in words a person can act on; "" when valid
    claims: dict[str, Any]


def _verify(token: str, jwks: dict[str, Any], typ: str, *, verify_exp: bool) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    if header.get("typ") != typ:
        raise jwt.InvalidTokenError(f"not a {typ} (typ {header.get('typ')!r})")
    jwk = next((k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        raise LookupError(f"unknown signing key {header.get('kid')!r}")
    # The algorithm comes from our key set, never from the token's own header. Times are judged
    # by the caller against its `now`, not here against this machine's clock: a client a few
    # seconds behind the server would otherwise refuse a list just signed as "not yet valid".
    return jwt.decode(
        token,
        ECAlgorithm.from_jwk(json.dumps(jwk)),  # type: ignore[arg-type]
        algorithms=[jwk["alg"]],
        options={"verify_exp": verify_exp, "verify_iat": False, "verify_aud": False},
    )


def grant_verify_offline(
    token: str, *, jwks: dict[str, Any], revocations: str, now: datetime
) -> GrantCheck:
    """Check a grant with nothing but the JWKS document and a revocation list: signature, key,
    expiry, revocation and the list's own freshness, each with its own reason."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        return GrantCheck(False, 'the key set is not a JWKS document ({"keys": [...]})', {})
    try:
        listing = _verify(revocations, jwks, REVOCATIONS_TYPE, verify_exp=False)
    except jwt.InvalidKeyError as error:
        return GrantCheck(False, f"the key set holds a key that cannot be used: {error}", {})
    except (jwt.InvalidTokenError, LookupError) as error:
        return GrantCheck(False, f"revocation list does not verify: {error}", {})
    try:
        claims = _verify(token, jwks, GRANT_TYPE, verify_exp=False)
    except LookupError as error:
        return GrantCheck(False, f"{error}: not in the key set", {})
    except jwt.InvalidKeyError as error:
        return GrantCheck(False, f"the key set holds a key that cannot be used: {error}", {})
    except jwt.InvalidSignatureError:
        return GrantCheck(False, "bad signature: the grant was altered or not signed by us", {})
    except jwt.InvalidTokenError as error:
        return GrantCheck(False, f"not a valid grant: {error}", {})
    if listing.get("exp", 0) <= now.timestamp():
        return GrantCheck(False, "stale revocation list: fetch a fresh one", claims)
    if "exp" in claims and claims["exp"] <= now.timestamp():
        return GrantCheck(False, "expired", claims)
    if claims.get("jti") in set(listing.get("revoked", [])):
        return GrantCheck(False, "revoked", claims)
    return GrantCheck(True, "", claims)
