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


class License(models.Model):
    """One version of a license text. Published means immutable: requests and grants cite its
    sha256, so what someone accepted can always be shown byte for byte."""

    slug = models.SlugField(max_length=64, help_text="e.g. llama-community")
    version = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    text = models.TextField()
    text_sha256 = models.CharField(max_length=64, editable=False)
    commercial_use = models.BooleanField(default=False)
    mau_cap = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Monthly active users above which a separate license "
        "is needed (Llama's 700M clause); empty for none.",
    )
    attribution_required = models.BooleanField(default=False)
    acceptable_use_url = models.URLField(blank=True)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["slug", "version"], name="license_unique_version"),
        ]
        ordering = ["slug", "-created_at"]

    def __str__(self) -> str:
        return f"{self.title} {self.version}"


class PartnerOrganisation(models.Model):
    """An organisation whose members may download a model while it is still proprietary."""

    name = models.CharField(max_length=200, unique=True)
    members = models.ManyToManyField("auth.User", related_name="partner_organisations", blank=True)

    def __str__(self) -> str:
        return self.name


class GatePolicy(models.Model):
    """How developers get access to a gated model: which license, which form, who decides."""

    class Mode(models.TextChoices):
        AUTO = "auto", "Approve at once"
        MANUAL = "manual", "Reviewed by staff"

    class Notify(models.TextChoices):
        REALTIME = "realtime", "On every new request"
        DIGEST = "digest", "Daily digest"

    model = models.OneToOneField(
        "release.Model", on_delete=models.CASCADE, related_name="gate_policy"
    )
    license = models.ForeignKey(
        License,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        help_text="The license version a request accepts now.",
    )
    approval_mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.MANUAL)
    form_fields = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name", "label", "type": text|select|country|date|checkbox, '
        '"required", "options": [...] for select}]',
    )
    blocked_countries = models.JSONField(
        default=list, blank=True, help_text="ISO 3166-1 alpha-2 codes"
    )
    partners = models.ManyToManyField(PartnerOrganisation, blank=True, related_name="models")
    grant_ttl_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Grants expire after this many days; empty: never."
    )
    reviewer_notifications = models.CharField(
        max_length=8, choices=Notify.choices, default=Notify.REALTIME
    )

    class Meta:
        verbose_name_plural = "gate policies"

    def __str__(self) -> str:
        return f"gate policy of {self.model}"


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        WITHDRAWN = "withdrawn"

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="access_requests")
    model = models.ForeignKey(
        "release.Model", on_delete=models.CASCADE, related_name="access_requests"
    )
    license = models.ForeignKey(License, on_delete=models.PROTECT, null=True, blank=True)
    license_sha256 = models.CharField(max_length=64, blank=True)
    answers = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reviewer = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True, help_text="Shown to the requester.")
    may_reapply = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One live request per person and model: a decision is about one request.
            models.UniqueConstraint(
                fields=["user", "model"],
                condition=models.Q(status__in=["pending", "approved"]),
                name="access_request_one_live",
            ),
        ]
        indexes = [models.Index(fields=["model", "status", "created_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} -> {self.model} ({self.status})"


class Grant(models.Model):
    """A signed license grant: the JWS proves, offline, who may use which weights under which
    license text. Exactly one live grant per approved request (database constraint)."""

    jti = models.UUIDField(unique=True, editable=False)
    request = models.ForeignKey(
        AccessRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="grants"
    )
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="grants")
    model = models.ForeignKey("release.Model", on_delete=models.CASCADE, related_name="grants")
    artifacts = models.JSONField(default=list, help_text='["*"] for every artifact')
    license = models.ForeignKey(License, on_delete=models.PROTECT)
    license_sha256 = models.CharField(max_length=64)
    kid = models.CharField(max_length=64)
    token = models.TextField(help_text="The compact JWS.")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=500, blank=True)
    suspended_at = models.DateTimeField(
        null=True, blank=True, help_text="Set while an artifact is withdrawn; lifted by staff."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["request"],
                condition=models.Q(revoked_at__isnull=True),
                name="grant_one_live_per_request",
            ),
        ]
        indexes = [models.Index(fields=["user", "model"])]
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"grant {self.jti} ({self.user} -> {self.model})"


class WebhookEndpoint(models.Model):
    """A URL told about a model's access and release events, each POST signed with the
    endpoint's secret (HMAC-SHA256). The secret is kept only encrypted under
    SIGNING_MASTER_KEY (we must sign with it, so it cannot be a one-way hash) and is shown once,
    when it is made (`licensing.notifications`)."""

    model = models.ForeignKey(
        "release.Model", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    # AES-256-GCM nonce + ciphertext of the secret, the endpoint's id as associated data.
    secret_encrypted = models.BinaryField(editable=False)
    events = models.JSONField(
        default=list, blank=True, help_text="Event names to send; empty for every event."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["model", "id"]

    def __str__(self) -> str:
        return f"webhook #{self.pk} {self.url}"


class WebhookDelivery(models.Model):
    """One event for one endpoint, and what became of it: the delivery log. The row is written
    in the transaction of the change it reports, so a committed change always has its
    delivery, and a rolled-back one never does."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The body sent: id, event, created_at, data.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The start of the last response.")
    last_error = models.TextField(blank=True)
    # While pending: when the next attempt may start. An attempt in flight pushes it forward
    # (a lease), so two copies of the task never post the same delivery at once.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"delivery #{self.pk} {self.event} ({self.status})"


class DownloadToken(models.Model):
    """A script's credential (`wg_…`). Only its sha256 is stored; `hint` is its last four
    characters, so people can tell their tokens apart."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="download_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=4)
    scope = models.CharField(max_length=16, default="read", editable=False)
    model_ids = models.JSONField(default=list, blank=True, help_text="org/name ids; empty: all")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (…{self.hint})"
