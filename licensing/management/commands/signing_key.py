from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.errors import DomainError
from licensing.keys import CURVES, signing_key_retire, signing_key_rotate
from licensing.models import SigningKey


class Command(BaseCommand):
    help = (
        "Manage the service's signing keys: `rotate --purpose models|grants [--curve P-256|P-384]`"
        " makes a new active key and retires the previous one; `retire KID` stops a key from"
        " signing; `list` shows public details only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="rotate|retire|list")
        rotate = actions.add_parser("rotate", help="create a new active key for a purpose")
        rotate.add_argument("--purpose", required=True, choices=SigningKey.Purpose.values)
        rotate.add_argument("--curve", default="P-256", choices=list(CURVES))
        retire = actions.add_parser("retire", help="retire a key (nothing signs until a rotate)")
        retire.add_argument("kid")
        actions.add_parser("list", help="list keys, newest first (never private material)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "rotate":
                key = signing_key_rotate(
                    purpose=options["purpose"], actor=None, curve=options["curve"]
                )
                self.stdout.write(f"active {key.purpose} key: {key.kid} ({key.algorithm})")
                self.stdout.write(key.public_pem.rstrip())
            elif options["action"] == "retire":
                found = SigningKey.objects.filter(kid=options["kid"]).first()
                if found is None:
                    raise CommandError(f"no signing key {options['kid']!r}")
                signing_key_retire(key=found, actor=None)
                self.stdout.write(f"retired {found.kid}")
            else:
                self._list()
        except DomainError as error:
            raise CommandError(error.message) from error

    def _list(self) -> None:
        rows = [("KID", "PURPOSE", "ALG", "STATE", "CREATED", "RETIRED")]
        for key in SigningKey.objects.only(
            "kid", "purpose", "algorithm", "state", "created_at", "retired_at"
        ):
            rows.append(
                (
                    key.kid,
                    key.purpose,
                    key.algorithm,
                    key.state,
                    key.created_at.isoformat(timespec="seconds"),
                    key.retired_at.isoformat(timespec="seconds") if key.retired_at else "-",
                )
            )
        if len(rows) == 1:
            self.stdout.write("no signing keys: run `manage.py signing_key rotate --purpose ...`")
            return
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
