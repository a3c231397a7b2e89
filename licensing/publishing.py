"""The two public documents that make grants verifiable offline: the JWKS and the signed
revocation list. The list is re-signed on every revocation and by a periodic task, and cached in
Redis so every web process serves the same, fresh one."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from licensing.grants import jwks_document, revocation_list_token
from licensing.keys import signing_key_active
from licensing.models import SigningKey
from licensing.selectors import grant_signing_keys, revoked_grant_ids

REVOCATIONS_CACHE_KEY = "licensing:revocations:v1"


def revocation_list_publish() -> str:
    """Sign the current list of revoked grant ids and publish it (cache) for everyone."""
    now = timezone.now()
    ttl = settings.REVOCATION_LIST_TTL_SECONDS
    token = revocation_list_token(
        key=signing_key_active(purpose=SigningKey.Purpose.GRANTS),
        issuer=settings.SITE_URL,
        revoked=revoked_grant_ids(now=now),
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    # Kept a little shorter than the list's own expiry: the cache never serves a stale list.
    cache.set(REVOCATIONS_CACHE_KEY, token, timeout=max(1, ttl - 30))
    return token


def revocation_list_current() -> str:
    token = cache.get(REVOCATIONS_CACHE_KEY)
    return token if isinstance(token, str) else revocation_list_publish()


def jwks_current() -> dict[str, Any]:
    return jwks_document(grant_signing_keys())
