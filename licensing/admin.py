from django.contrib import admin
from django.http import HttpRequest

from licensing.models import AuditEvent, SigningKey


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Append-only: no one adds, edits or deletes events here (`verify_audit` would notice)."""

    list_display = ["id", "created_at", "actor", "action", "subject_type", "subject_id"]
    list_filter = ["action", "subject_type"]
    search_fields = ["actor", "subject_id", "action"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin[SigningKey]):
    """Read-only: keys change through `manage.py signing_key`, which audits each rotation. The
    encrypted private key is not shown, not even as ciphertext."""

    list_display = ["kid", "purpose", "algorithm", "state", "created_at", "retired_at"]
    list_filter = ["purpose", "state"]
    search_fields = ["kid"]
    fields = readonly_fields = (
        "kid",
        "purpose",
        "algorithm",
        "state",
        "created_at",
        "retired_at",
        "public_pem",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False


# The access flow (licenses, policies, requests, grants) has its own module.
from licensing import admin_access  # noqa: E402, F401
