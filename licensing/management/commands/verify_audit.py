from typing import Any

from django.core.management.base import BaseCommand, CommandError

from licensing.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log; exits non-zero at the first tampered event."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_chain_verify()
        if not report.ok:
            raise CommandError(
                f"audit chain broken at event #{report.broken_at}: {report.reason} "
                f"({report.checked} events before it verified)"
            )
        self.stdout.write(f"audit chain intact: {report.checked} events verified")
