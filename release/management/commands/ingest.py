import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from config.errors import DomainError
from release import services
from release.models import IngestJob, Model


class Command(BaseCommand):
    help = (
        "Ingest a new version from the staging bucket: "
        "--model org/name --version v1 --artifact base=s3://staging/prefix/ [...] [--wait]"
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Our --version names the model version; Django's own --version (its release) yields.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="org/name (created if missing)")
        parser.add_argument("--version", required=True)
        parser.add_argument(
            "--artifact", action="append", required=True, metavar="NAME=s3://BUCKET/PREFIX/"
        )
        parser.add_argument(
            "--wait", action="store_true", help="wait until the version is sealed or fails"
        )

    def handle(
        self, *args: Any, model: str, version: str, artifact: list[str], wait: bool, **options: Any
    ) -> None:
        org, _, name = model.partition("/")
        sources = {}
        for item in artifact:
            artifact_name, sep, uri = item.partition("=")
            if not sep:
                raise CommandError(f"--artifact {item!r}: expected NAME=s3://bucket/prefix/")
            if artifact_name in sources:
                raise CommandError(f"artifact {artifact_name!r} given twice")
            sources[artifact_name] = uri
        try:
            # A refused ingest must not leave a new, empty model behind.
            with transaction.atomic():
                target = Model.objects.filter(org=org, name=name).first()
                if target is None:
                    target = services.model_create(actor=None, org=org, name=name)
                job = services.ingest_start(
                    actor=None, model=target, version_name=version, sources=sources
                )
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"ingest #{job.pk}: hashing {job.files.count()} files")
        if not wait:
            return
        while job.state in (IngestJob.State.HASHING, IngestJob.State.FINALIZING):
            time.sleep(0.5)
            job.refresh_from_db()
        if job.state == IngestJob.State.FAILED:
            raise CommandError(f"ingest #{job.pk} failed:\n{job.error}")
        assert job.version is not None
        self.stdout.write(f"sealed {job.version} as commit {job.version.commit}")
