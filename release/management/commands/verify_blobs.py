from argparse import ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from release.integrity import MAX_WORKERS, blobs_repair, blobs_verify, files_served_unpublished
from release.models import Model


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a number") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise ArgumentTypeError(f"must be between 1 and {MAX_WORKERS}")
    return workers


class Command(BaseCommand):
    help = (
        "Re-read every published blob (gated and public buckets) and check its size and sha256 "
        "against the manifest; name each file whose blob is missing or changed, and exit "
        "non-zero if any is. --repair puts such blobs back from a good copy (another bucket, "
        "or staging, verified again) and exits non-zero only if one could not be."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", metavar="ORG/NAME", help="only the blobs of this model")
        parser.add_argument(
            "--workers",
            type=_workers,
            default=4,
            help=f"objects streamed at once (1-{MAX_WORKERS}, default 4)",
        )
        parser.add_argument(
            "--repair",
            action="store_true",
            help="delete each missing or changed blob and write it again from a good copy",
        )

    def handle(
        self, *args: Any, model: str | None, workers: int, repair: bool, **options: Any
    ) -> None:
        target = None
        if model is not None:
            org, _, name = model.partition("/")
            target = Model.objects.filter(org=org, name=name).first()
            if target is None:
                raise CommandError(f"no model {model}")
        report = blobs_verify(model=target, workers=workers)
        for problem in report.problems:
            where = f"{problem.bucket}/{problem.key}"
            for file in problem.files or ("(no file of a sealed version has it)",):
                self.stderr.write(f"{problem.kind.upper():<12} {file}  {where}: {problem.detail}")
        unpublished = files_served_unpublished(model=target)
        if unpublished:
            self.stdout.write(
                f"note: {unpublished} file(s) of gated or open artifacts have no published blob "
                "and are served from staging (their phase was set without an unlock)"
            )
        if not report.ok and repair:
            outcomes = blobs_repair(report=report)
            for outcome in outcomes:
                problem = outcome.problem
                state = "REPAIRED" if outcome.repaired else "NOT REPAIRED"
                self.stdout.write(f"{state:<12} {problem.bucket}/{problem.key}: {outcome.detail}")
            left = sum(not outcome.repaired for outcome in outcomes)
            if left:
                raise CommandError(f"{left} of {len(outcomes)} broken blobs could not be repaired")
            self.stdout.write(f"{len(outcomes)} broken blobs repaired and verified again")
            return
        if not report.ok:
            raise CommandError(
                f"{len(report.problems)} of {report.checked} published blobs do not match "
                "their manifest"
            )
        self.stdout.write(
            f"{report.checked} published blobs verified ({report.bytes_read} bytes read): "
            "every one matches its manifest"
        )
