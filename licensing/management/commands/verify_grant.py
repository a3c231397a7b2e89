import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from licensing.grants import grant_verify_offline
from licensing.publishing import jwks_current, revocation_list_current


def _read(value: str) -> str:
    """A literal value, `@path` for a file's content, or `-` for standard input."""
    if value == "-":
        return sys.stdin.read().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text().strip()
        except OSError as error:
            raise CommandError(f"cannot read {value[1:]}: {error}") from error
    return value.strip()


class Command(BaseCommand):
    help = (
        "Verify a license grant offline: signature, key, expiry, revocation and the freshness of "
        "the revocation list. Uses this service's JWKS and list unless --jwks/--revocations "
        "name saved copies (what a client without network access would hold)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("grant", help="the compact JWS, @file, or - for stdin")
        parser.add_argument("--jwks", help="@file with a saved /.well-known/jwks.json")
        parser.add_argument(
            "--revocations", help="@file with a saved /.well-known/weightgate-revocations.jwt"
        )

    def handle(
        self, *args: Any, grant: str, jwks: str | None, revocations: str | None, **options: Any
    ) -> None:
        try:
            keys = json.loads(_read(jwks)) if jwks else jwks_current()
        except json.JSONDecodeError as error:
            raise CommandError(f"--jwks is not JSON: {error}") from error
        listing = _read(revocations) if revocations else revocation_list_current()
        check = grant_verify_offline(
            _read(grant), jwks=keys, revocations=listing, now=timezone.now()
        )
        if not check.valid:
            raise CommandError(f"grant NOT valid: {check.reason}")
        claims = check.claims
        self.stdout.write(
            f"grant valid: {claims['jti']} for user {claims['sub']} on {claims['model']} "
            f"({', '.join(claims['artifacts'])}) under {claims['license']['id']} "
            f"{claims['license']['version']}"
            + (f", expires {claims['exp']}" if "exp" in claims else ", no expiry")
        )
