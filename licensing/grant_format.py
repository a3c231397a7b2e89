"""Offline verification of license grants and revocation lists: pure JOSE with PyJWT, no Django.
`licensing.grants` signs them; this module is shared with the `weightgate` CLI, which checks a
grant with nothing but the published JWKS and revocation list."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

GRANT_TYPE = "wg-grant+jwt"
REVOCATIONS_TYPE = "wg-revocations+jwt"


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


# A client checks many grants against one list: verify each list once. Keyed by the list and the
# key set it was checked with, so a changed key set checks it again.
_verified_lists: dict[tuple[str, str], tuple[dict[str, Any], frozenset[str]]] = {}


def _revocation_listing(
    revocations: str, jwks: dict[str, Any]
) -> tuple[dict[str, Any], frozenset[str]]:
    cache_key = (revocations, json.dumps(jwks, sort_keys=True))
    hit = _verified_lists.get(cache_key)
    if hit is None:
        listing = _verify(revocations, jwks, REVOCATIONS_TYPE, verify_exp=False)
        hit = (listing, frozenset(listing.get("revoked", [])))
        if len(_verified_lists) >= 16:
            _verified_lists.clear()
        _verified_lists[cache_key] = hit
    return hit


def grant_verify_offline(
    token: str, *, jwks: dict[str, Any], revocations: str, now: datetime
) -> GrantCheck:
    """Check a grant with nothing but the JWKS document and a revocation list: signature, key,
    expiry, revocation and the list's own freshness, each with its own reason."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        return GrantCheck(False, 'the key set is not a JWKS document ({"keys": [...]})', {})
    try:
        listing, revoked = _revocation_listing(revocations, jwks)
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
    if claims.get("jti") in revoked:
        return GrantCheck(False, "revoked", claims)
    return GrantCheck(True, "", claims)
