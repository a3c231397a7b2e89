from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """An append-only record of a state change. Each event stores the hash of the one before it,
    so editing, inserting or deleting an event in the middle breaks the chain (`verify_audit`)."""

    created_at = models.DateTimeField()
    # Plain values, not a foreign key: deleting a user must not rewrite history (or the chain).
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["subject_type", "subject_id"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.subject_type}:{self.subject_id}"


class SigningKey(models.Model):
    """An ECDSA key the service signs with: license grants (JWS) or model versions (OpenSSF
    Model Signing bundles). The private half is stored only encrypted under SIGNING_MASTER_KEY
    (see `licensing.keys`); retired keys stay so that old signatures keep verifying."""

    class Purpose(models.TextChoices):
        GRANTS = "grants"
        MODELS = "models"

    class Algorithm(models.TextChoices):
        ES256 = "ES256", "ES256 (ECDSA P-256, SHA-256)"
        ES384 = "ES384", "ES384 (ECDSA P-384, SHA-384)"

    class State(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    kid = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=8, choices=Algorithm.choices)
    public_pem = models.TextField()
    # AES-256-GCM nonce + ciphertext of the PKCS#8 DER private key, the kid as associated data.
    private_key_encrypted = models.BinaryField(editable=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two requests rotating at once must not leave two keys signing side by side.
            models.UniqueConstraint(
                fields=["purpose"],
                condition=models.Q(state="active"),
                name="signing_key_one_active_per_purpose",
            ),
            models.CheckConstraint(
                condition=models.Q(state="active", retired_at__isnull=True)
                | models.Q(state="retired", retired_at__isnull=False),
                name="signing_key_retired_at_matches_state",
            ),
            models.CheckConstraint(
                condition=models.Q(purpose__in=["grants", "models"])
                & models.Q(algorithm__in=["ES256", "ES384"]),
                name="signing_key_known_purpose_and_algorithm",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.state})"
