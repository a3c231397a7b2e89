from django.db import models


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
