"""`weightgate grant verify`: is this license grant valid? Signature, key, expiry, revocation and
the revocation list's freshness, checked with `licensing.grant_format` (the service's own logic)
against the published JWKS and revocation list, or against saved copies of them (offline)."""

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from licensing.grant_format import grant_verify_offline
from weightgate_cli.client import Api
from weightgate_cli.config import Credentials, credentials
from weightgate_cli.console import Console
from weightgate_cli.errors import UsageError, VerificationError

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _read(value: str, what: str) -> str:
    """`-` for standard input, `@path` or a path for a file's content, or the value itself."""
    if value == "-":
        return sys.stdin.read().strip()
    path = Path(value[1:] if value.startswith("@") else value)
    if value.startswith("@") or path.is_file():
        try:
            return path.read_text().strip()
        except OSError as error:
            raise UsageError(f"cannot read {what} from {path}: {error}") from error
    if _COMPACT_JWS.fullmatch(value.strip()):
        return value.strip()
    raise UsageError(f"{what}: no such file {value!r} (use a path, @path, - or the token itself)")


def grant_verify(
    source: str,
    *,
    console: Console,
    endpoint: str | None = None,
    jwks: str | None = None,
    revocations: str | None = None,
    now: datetime | None = None,
) -> int:
    token = _read(source, "the grant")
    keys: Any = None
    listing: str | None = None
    if jwks is not None:
        try:
            keys = json.loads(_read(jwks, "--jwks"))
        except json.JSONDecodeError as error:
            raise UsageError(f"--jwks is not JSON: {error}") from error
    if revocations is not None:
        listing = _read(revocations, "--revocations")
    if keys is None or listing is None:
        # Public documents: fetched without the token, which they do not need.
        found = credentials(endpoint=endpoint)
        with Api(Credentials(endpoint=found.endpoint, token=None)) as api:
            if keys is None:
                keys = api.get_json("/.well-known/jwks.json", what="fetch the JWKS")
            if listing is None:
                listing = api.request(
                    "/.well-known/weightgate-revocations.jwt", what="fetch the revocation list"
                ).text.strip()
    check = grant_verify_offline(
        token, jwks=keys, revocations=listing, now=now or datetime.now(UTC)
    )
    if not check.valid:
        raise VerificationError(f"grant NOT valid: {check.reason}")
    claims = check.claims
    license_ = claims.get("license") or {}
    expires = (
        datetime.fromtimestamp(claims["exp"], UTC).isoformat(timespec="seconds")
        if "exp" in claims
        else None
    )
    console.print(
        f"grant valid: {claims.get('jti')} for user {claims.get('sub')} on {claims.get('model')} "
        f"({', '.join(claims.get('artifacts') or [])}) under {license_.get('id')} "
        f"{license_.get('version')}" + (f", expires {expires}" if expires else ", no expiry")
    )
    return 0
