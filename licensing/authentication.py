"""`Authorization: Bearer wg_…` for scripts: DRF authentication with download tokens."""

from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from licensing import read_cache
from licensing.models import DownloadToken
from licensing.tokens import token_hash, token_touch, token_well_formed


class TokenError(exceptions.AuthenticationFailed):
    """401 with a code saying exactly what is wrong with the token and what to do."""


def token_authenticate(raw: str, *, safe_method: bool = True) -> tuple[User, DownloadToken]:
    """The user and token behind `raw`, or TokenError. The row (one indexed query) is
    remembered (`licensing.read_cache`) until a change is announced: a revocation or
    deactivation takes effect within a second everywhere, and on the very next request in the
    process that made it. Expiry is checked against the clock on every request."""
    if not token_well_formed(raw):
        raise TokenError(
            "this is not a Weightgate token (wg_…); create one in your settings",
            code="token_invalid",
        )
    digest = token_hash(raw)
    token = read_cache.remembered(("token", digest), lambda: _token_by_hash(digest))
    if token is None or not token.user.is_active:
        raise TokenError(
            "unknown token: it may have been deleted; create a new one", code="token_invalid"
        )
    if token.revoked_at is not None:
        raise TokenError("this token was revoked; create a new one", code="token_revoked")
    if token.expires_at is not None and token.expires_at <= timezone.now():
        raise TokenError("this token expired; create a new one", code="token_expired")
    if not safe_method:
        raise exceptions.PermissionDenied(
            "download tokens are read-only; sign in to change anything", code="token_read_only"
        )
    token_touch(token)
    return token.user, token


def _token_by_hash(digest: str) -> DownloadToken | None:
    # Token hashes are unique: at most one row, so no ORDER BY to build.
    tokens = DownloadToken.objects.select_related("user").filter(token_hash=digest).order_by()
    return next(iter(tokens[:1]), None)


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, DownloadToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None  # not ours: other authenticators (or anonymous) apply
        if len(parts) != 2:
            raise TokenError("use `Authorization: Bearer wg_…`", code="token_invalid")
        return token_authenticate(
            parts[1].decode("latin-1"), safe_method=request.method in ("GET", "HEAD", "OPTIONS")
        )

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="weightgate"'


def request_token(request: Any) -> DownloadToken | None:
    """The token a DRF request was authenticated with, if any."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, DownloadToken) else None


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """How the OpenAPI schema describes download tokens."""

    target_class = "licensing.authentication.BearerTokenAuthentication"
    name = "downloadToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "wg_…",
            "description": "A Weightgate download token (read-only).",
        }
