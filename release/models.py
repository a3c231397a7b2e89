"""The release catalog: models, their versions, the artifacts of a version, and their files.

State changes go through `release.services`; nothing here changes state on save.
"""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# Hub-style repository names: letters, digits, '-', '_', '.', not starting with punctuation.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
name_validator = RegexValidator(
    rf"^{NAME_PATTERN}$",
    "Use letters, digits, '-', '_' and '.', starting with a letter or digit (at most 96).",
)
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class Phase(models.TextChoices):
    PROPRIETARY = "proprietary", "Proprietary"
    GATED = "gated", "Gated"
    OPEN = "open", "Open"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Model(models.Model):
    """A repository of weights, `org/name`, like a Hub repo."""

    org = models.CharField(max_length=96, validators=[name_validator])
    name = models.CharField(max_length=96, validators=[name_validator])
    title = models.CharField(max_length=200, blank=True)
    card = models.TextField(blank=True, help_text="Model card, in Markdown.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="model_unique_repo_id")]
        ordering = ["org", "name"]

    def __str__(self) -> str:
        return self.repo_id

    @property
    def repo_id(self) -> str:
        return f"{self.org}/{self.name}"


class Version(models.Model):
    """A named set of files. Sealed means immutable: its manifest and commit id are fixed."""

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="versions")
    name = models.CharField(max_length=96, validators=[name_validator])
    # NULL, not "", until sealed: unsealed versions must not collide in the unique commit index.
    commit = models.CharField(max_length=40, null=True, blank=True, editable=False)  # noqa: DJ001
    manifest = models.JSONField(null=True, blank=True, editable=False)
    sealed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "name"], name="version_unique_name"),
            models.UniqueConstraint(fields=["model", "commit"], name="version_unique_commit"),
            models.CheckConstraint(
                condition=(
                    Q(sealed_at__isnull=True, commit__isnull=True, manifest__isnull=True)
                    | Q(
                        sealed_at__isnull=False,
                        commit__regex=r"^[0-9a-f]{40}$",
                        manifest__isnull=False,
                    )
                ),
                name="version_sealed_has_commit_and_manifest",
            ),
        ]
        ordering = ["model", "-created_at"]

    def __str__(self) -> str:
        return f"{self.model.repo_id}@{self.name}"

    @property
    def is_sealed(self) -> bool:
        return self.sealed_at is not None


class Artifact(models.Model):
    """A named part of a version (base, instruct, tokenizer...). The phase lives here, so a
    release can open some parts while others stay proprietary."""

    version = models.ForeignKey(Version, on_delete=models.PROTECT, related_name="artifacts")
    name = models.CharField(max_length=96, validators=[name_validator])
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PROPRIETARY)
    phase_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="artifact_unique_name"),
            models.CheckConstraint(
                condition=Q(phase__in=Phase.values), name="artifact_phase_valid"
            ),
        ]
        ordering = ["version", "name"]

    def __str__(self) -> str:
        return f"{self.version}:{self.name}"


class File(models.Model):
    """A file of a version, belonging to one artifact. `version` repeats `artifact.version` so that
    the database itself can refuse two files with one path in a version."""

    version = models.ForeignKey(Version, on_delete=models.PROTECT, related_name="files")
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=1024)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="file_unique_path"),
            models.CheckConstraint(
                condition=Q(sha256__regex=SHA256_PATTERN), name="file_sha256_hex"
            ),
        ]
        ordering = ["version", "path"]

    def __str__(self) -> str:
        return self.path


HEARTBEAT_NAME = "celery"


class Heartbeat(models.Model):
    """The last time a Celery worker ran the periodic heartbeat that beat queues. Old means the
    worker or beat is not running; the admin says so."""

    name = models.CharField(max_length=32, unique=True)
    last_seen = models.DateTimeField()
    worker = models.CharField(max_length=255)

    def __str__(self) -> str:
        return self.name
