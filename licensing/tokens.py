"""Download tokens for scripts: `wg_` + 32 random base62 characters + a 6-character checksum.

The prefix and checksum make a leaked token recognisable (secret scanners match `wg_` and can
validate the checksum offline without calling us). Only the sha256 of a token is stored: tokens
carry 190 bits of randomness, so a fast hash is enough and lookups stay one indexed query.
"""

import hashlib
import re
import secrets
import string
import zlib
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from config.text import plain_text_clean
from licensing import read_cache
from licensing.models import DownloadToken
from licensing.services import audit_record

PREFIX = "wg_"
ALPHABET = string.digits + string.ascii_letters  # base62
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
# last_used_at is written at most this often per token: not a write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Checked on every authenticated download: one compiled match beats a per-character loop.
_SHAPE = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}}")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(secret: str) -> str:
    return _base62(zlib.crc32(secret.encode()), CHECKSUM_LENGTH)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_well_formed(token: str) -> bool:
    """Shape and checksum only; says nothing about whether the token exists."""
    if _SHAPE.fullmatch(token) is None:
        return False
    body = token[len(PREFIX) :]
    return _checksum(body[:SECRET_LENGTH]) == body[SECRET_LENGTH:]


def token_create(
    *, user: User, name: str, models: list[str] | None = None, expires_at: datetime | None = None
) -> tuple[DownloadToken, str]:
    """A new token; the clear value is returned once, here, and never stored."""
    try:
        name = plain_text_clean(name, limit=100, multiline=False)
    except ValueError as problem:
        raise DomainError(f"the token name {problem}", code="invalid_name") from None
    if not name:
        raise DomainError("a token needs a name of 1 to 100 characters", code="invalid_name")
    if expires_at is not None and expires_at <= timezone.now():
        raise DomainError("the expiry must be in the future", code="invalid_expiry")
    repo_ids = sorted(set(models or []))
    if any(repo_id.count("/") != 1 for repo_id in repo_ids):
        raise DomainError("models are named org/name", code="invalid_models")
    secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    clear = PREFIX + secret + _checksum(secret)
    with transaction.atomic():
        token = DownloadToken.objects.create(
            user=user,
            name=name,
            token_hash=token_hash(clear),
            hint=clear[-4:],
            model_ids=repo_ids,
            expires_at=expires_at,
        )
        audit_record(
            actor=user,
            action="token.created",
            subject_type="token",
            subject_id=token.pk,
            data={"name": name, "models": repo_ids},
        )
    return token, clear


def token_revoke(*, token: DownloadToken, user: User) -> DownloadToken:
    """Revoke one of your tokens (staff may revoke anyone's). Effective for the next request."""
    if token.user_id != user.pk and not user.is_staff:
        raise NotAllowed("not your token", code="not_yours")
    with transaction.atomic():
        locked = DownloadToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is not None:
            raise NotAllowed("the token is already revoked", code="already_revoked")
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            actor=user,
            action="token.revoked",
            subject_type="token",
            subject_id=locked.pk,
            data={"name": locked.name},
        )
    return locked


def token_touch(token: DownloadToken) -> None:
    """Record use, at most once a minute per token (one conditional UPDATE). No access decision
    depends on it, so the write keeps what `licensing.read_cache` remembers."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        with read_cache.writes_unremarked():
            DownloadToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
