"""The release catalog: models, their versions, the artifacts of a version, and their files.

State changes go through `release.services`; nothing here changes state on save.
"""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# Hub-style repository names: letters, digits, '-', '_', '.', not starting with punctuation.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
# \Z, not $: `$` also matches before a trailing newline, so "acme\n" would pass and could sit
# beside "acme" looking the same.
name_validator = RegexValidator(
    rf"^{NAME_PATTERN}\Z",
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
    # OpenSSF Model Signing bundle over every file of the version (a Sigstore bundle, JSON).
    signature = models.JSONField(null=True, blank=True, editable=False)
    signing_kid = models.CharField(max_length=64, blank=True, editable=False)
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
    # The same kind of bundle over this artifact's files alone: what someone who may download
    # only this part can verify.
    signature = models.JSONField(null=True, blank=True, editable=False)

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


class FileParts(models.Model):
    """The SHA-256 of each `part_size` slice of a large file, computed at ingest from the stream
    that gave it its sha256: publishing lets the object store copy the parts and compares the
    digests it reports with these (release.publishing). Apart from File, whose rows every
    download reads."""

    file = models.OneToOneField(
        File, on_delete=models.CASCADE, primary_key=True, related_name="parts"
    )
    part_size = models.PositiveBigIntegerField()
    sha256 = models.JSONField()  # base64 digests, part 1 first

    def __str__(self) -> str:
        return f"{self.file} in {len(self.sha256)} parts"


HEARTBEAT_NAME = "celery"


class Heartbeat(models.Model):
    """The last time a Celery worker ran the periodic heartbeat that beat queues. Old means the
    worker or beat is not running; the admin says so."""

    name = models.CharField(max_length=32, unique=True)
    last_seen = models.DateTimeField()
    worker = models.CharField(max_length=255)

    def __str__(self) -> str:
        return self.name


class IngestJob(models.Model):
    """Turning a staging prefix per artifact into a sealed version: every file is hashed and
    checked by its own task; the version is created and sealed only if all of them pass."""

    class State(models.TextChoices):
        HASHING = "hashing", "Hashing files"
        FINALIZING = "finalizing", "Checking and sealing"
        SEALED = "sealed", "Sealed"
        FAILED = "failed", "Failed"

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="ingests")
    version_name = models.CharField(max_length=96, validators=[name_validator])
    sources = models.JSONField(help_text="{artifact name: s3://bucket/prefix/}")
    state = models.CharField(max_length=16, choices=State.choices, default=State.HASHING)
    version = models.OneToOneField(
        Version, on_delete=models.PROTECT, null=True, blank=True, related_name="ingest"
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One live ingest per version name; a failed one may be retried under the same name.
            models.UniqueConstraint(
                fields=["model", "version_name"],
                condition=~Q(state="failed"),
                name="ingest_one_live_per_version",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ingest {self.model}@{self.version_name} ({self.state})"


class IngestFile(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    job = models.ForeignKey(IngestJob, on_delete=models.CASCADE, related_name="files")
    artifact = models.CharField(max_length=96)
    path = models.CharField(max_length=1024)
    staging_key = models.CharField(max_length=1024)
    listed_size = models.PositiveBigIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    # Safetensors: {tensor: bytes}; an index file: its parsed JSON. Kept so that the final check
    # never reads a file a second time.
    details = models.JSONField(null=True, blank=True)
    # Large files: {"part_size": n, "sha256": [...]}, kept for sealing (release.models.FileParts).
    parts = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)  # the hashing task's id

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "path"], name="ingest_file_unique_path"),
        ]
        ordering = ["job", "path"]

    def __str__(self) -> str:
        return self.path


class ReleasePolicy(models.Model):
    """Who must approve an unlock of a model's artifacts (like a protected environment)."""

    model = models.OneToOneField(Model, on_delete=models.CASCADE, related_name="release_policy")
    required_approvals = models.PositiveSmallIntegerField(default=2)
    required_roles = models.JSONField(
        default=list,
        blank=True,
        help_text="Group names; each must be represented among the approvers, and only their "
        "members may approve.",
    )

    def __str__(self) -> str:
        return f"release policy of {self.model}"


class Unlock(models.Model):
    """A scheduled phase change of some artifacts of one version: approved, pre-staged to
    distribution storage and verified, then flipped at `not_before`."""

    class State(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        SCHEDULED = "scheduled", "Scheduled"
        STAGING = "staging", "Pushing and verifying"
        READY = "ready", "Ready to flip"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    version = models.ForeignKey(Version, on_delete=models.PROTECT, related_name="unlocks")
    artifacts = models.ManyToManyField(Artifact, related_name="unlocks")
    target_phase = models.CharField(max_length=16, choices=Phase.choices)
    not_before = models.DateTimeField(help_text="UTC; the flip happens at or after this time.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.AWAITING_APPROVAL)
    required_approvals = models.PositiveSmallIntegerField()
    required_roles = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True, help_text="Why it failed or was cancelled.")
    delayed_since = models.DateTimeField(
        null=True, blank=True, help_text="Due but not ready: when this was first noticed."
    )
    flipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["not_before"]
        indexes = [models.Index(fields=["state", "not_before"])]

    def __str__(self) -> str:
        return f"unlock #{self.pk} {self.version} -> {self.target_phase}"


class UnlockApproval(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    unlock = models.ForeignKey(Unlock, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    roles = models.JSONField(default=list, help_text="The approver's required roles at the time.")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["unlock", "approver"], name="approval_once_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision}s {self.unlock}"


class Blob(models.Model):
    """A content-addressed object (`blobs/sha256/<hex>`) verified in a distribution bucket.
    A row exists only after every byte was hashed on the way in and matched."""

    bucket = models.CharField(max_length=63)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    verified_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "sha256"], name="blob_unique_per_bucket"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket}/blobs/sha256/{self.sha256}"

    @property
    def key(self) -> str:
        return blob_key(self.sha256)


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


class UnlockFile(models.Model):
    """One file of an unlock on its way to distribution storage; progress lives here."""

    class State(models.TextChoices):
        PENDING = "pending"
        PUSHING = "pushing"
        VERIFIED = "verified"
        FAILED = "failed"

    unlock = models.ForeignKey(Unlock, on_delete=models.CASCADE, related_name="files")
    file = models.ForeignKey(File, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    bytes_done = models.PositiveBigIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["unlock", "file"], name="unlock_file_once"),
        ]

    def __str__(self) -> str:
        return f"{self.file} ({self.state})"


class DownloadEvent(models.Model):
    """One issued download URL (GET, not HEAD). Written in batches from a Redis buffer by a
    Celery task, never on the request path."""

    at = models.DateTimeField()
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    version = models.CharField(max_length=96)
    artifact = models.CharField(max_length=96)
    path = models.CharField(max_length=1024)
    user_id = models.BigIntegerField(null=True, blank=True)
    token_id = models.BigIntegerField(null=True, blank=True)
    grant = models.CharField(max_length=36, blank=True)

    class Meta:
        indexes = [models.Index(fields=["model", "at"])]

    def __str__(self) -> str:
        return f"{self.path} at {self.at}"


class DownloadDaily(models.Model):
    """Downloads per model, version and UTC day: what the admin and the API show."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="download_days")
    version = models.CharField(max_length=96)
    day = models.DateField()
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "version", "day"], name="download_day_once"),
        ]
        ordering = ["-day"]
        verbose_name_plural = "download counts per day"

    def __str__(self) -> str:
        return f"{self.model_id}@{self.version} {self.day}: {self.count}"
