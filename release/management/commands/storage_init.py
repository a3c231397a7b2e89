from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from release.storage import buckets_ensure


class Command(BaseCommand):
    help = (
        "Create the staging, gated and public buckets (idempotent); only public is anonymous-read."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        created = buckets_ensure()
        self.stdout.write(
            f"buckets ready at {settings.S3_ENDPOINT_URL}: "
            f"{settings.S3_BUCKET_STAGING}, {settings.S3_BUCKET_GATED}, {settings.S3_BUCKET_PUBLIC}"
            + (f" (created {', '.join(created)})" if created else "")
        )
