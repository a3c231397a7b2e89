"""Admin pages for the catalog. Creation and every state change go through `release.services`
(so they are checked and audited); sealed versions and their files are read-only."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.errors import DomainError
from release import services
from release.models import Artifact, File, Heartbeat, Model, Phase, Version


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VersionInline(ReadOnlyInline):
    model = Version
    fields = readonly_fields = ("name", "commit", "sealed_at", "created_at")


class ArtifactInline(ReadOnlyInline):
    model = Artifact
    fields = readonly_fields = ("name", "phase", "phase_changed_at")


class FileInline(ReadOnlyInline):
    model = File
    fields = readonly_fields = ("path", "artifact", "size", "sha256", "storage_key")
    show_change_link = False


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin[Model]):
    list_display = ["repo_id", "title", "created_at"]
    search_fields = ["org", "name", "title"]
    inlines = [VersionInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return ["org", "name", "created_at"] if obj else ["created_at"]

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)  # title and card only
            return
        created = services.model_create(
            actor=request.user, org=obj.org, name=obj.name, title=obj.title, card=obj.card
        )
        obj.pk, obj.created_at = created.pk, created.created_at

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin[Version]):
    list_display = ["__str__", "commit", "sealed_at", "created_at"]
    list_filter = ["model"]
    search_fields = ["name", "commit", "model__org", "model__name"]
    readonly_fields = ["commit", "sealed_at", "created_at", "manifest"]
    inlines = [ArtifactInline, FileInline]
    actions = ["seal"]

    def get_readonly_fields(self, request: HttpRequest, obj: Version | None = None) -> list[str]:
        return ["model", "name", *self.readonly_fields] if obj else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Version | None = None) -> bool:
        return obj is None or not obj.is_sealed

    def has_delete_permission(self, request: HttpRequest, obj: Version | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Version, form: Any, change: bool) -> None:
        if not change:
            created = services.version_create(actor=request.user, model=obj.model, name=obj.name)
            obj.pk, obj.created_at = created.pk, created.created_at

    @admin.action(description="Seal the selected versions (freeze manifest and commit id)")
    def seal(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        for version in queryset:
            try:
                sealed = services.version_seal(actor=request.user, version=version)
            except DomainError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"Sealed {sealed} as commit {sealed.commit}.")


class WithdrawForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea,
        max_length=2000,
        help_text="Recorded in the audit log and shown to administrators.",
    )


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin[Artifact]):
    list_display = ["__str__", "phase", "phase_changed_at"]
    list_filter = ["phase", "version__model"]
    search_fields = ["name", "version__name", "version__model__org", "version__model__name"]
    readonly_fields = ["phase", "phase_changed_at"]
    actions = ["make_gated", "make_open", "withdraw"]

    def get_readonly_fields(self, request: HttpRequest, obj: Artifact | None = None) -> list[str]:
        return ["version", "name", *self.readonly_fields] if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Artifact | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Artifact, form: Any, change: bool) -> None:
        if not change:
            created = services.artifact_create(
                actor=request.user, version=obj.version, name=obj.name
            )
            obj.pk = created.pk

    def _move(
        self, request: HttpRequest, queryset: QuerySet[Artifact], phase: str, reason: str = ""
    ) -> None:
        for artifact in queryset:
            try:
                services.artifact_set_phase(
                    actor=request.user, artifact=artifact, phase=phase, reason=reason
                )
            except DomainError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"{artifact} is now {phase}.")

    @admin.action(description="Move to gated (access on approval)")
    def make_gated(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> None:
        self._move(request, queryset, Phase.GATED)

    @admin.action(description="Move to open (anyone may download)")
    def make_open(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> None:
        self._move(request, queryset, Phase.OPEN)

    @admin.action(description="Withdraw (emergency stop; asks for a reason)")
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> HttpResponse | None:
        form = WithdrawForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            self._move(request, queryset, Phase.WITHDRAWN, form.cleaned_data["reason"])
            return None
        return render(
            request,
            "admin/release/artifact/withdraw.html",
            {
                **self.admin_site.each_context(request),
                "title": "Withdraw artifacts",
                "artifacts": queryset,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )


@admin.register(File)
class FileAdmin(admin.ModelAdmin[File]):
    """Files come from ingest with their digests; nobody edits them by hand."""

    list_display = ["path", "version", "artifact", "size", "sha256"]
    search_fields = ["path", "sha256"]
    list_select_related = ["version__model", "artifact"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: File | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: File | None = None) -> bool:
        return False


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin[Heartbeat]):
    list_display = ["name", "last_seen", "worker"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Heartbeat | None = None) -> bool:
        return False
