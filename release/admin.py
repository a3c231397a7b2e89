"""Admin pages for the catalog. Creation and every state change go through `release.services`
(so they are checked and audited); sealed versions and their files are read-only."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, reverse
from django.utils.html import format_html

from config.admin_permissions import ActionsNeedChangePermission
from config.errors import DomainError
from release import services
from release.admin_console import ReleaseConsole
from release.models import (
    Artifact,
    DownloadDaily,
    File,
    Heartbeat,
    IngestFile,
    IngestJob,
    Model,
    ReleasePolicy,
    Unlock,
    UnlockApproval,
    UnlockFile,
    Version,
)
from release.selectors import unlock_progress


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CreatedByServiceAdmin(admin.ModelAdmin[Any]):
    """For things a service creates from the add form and that nobody edits afterwards: a
    refusal from the service shows as a message, and the rows shown inline are the service's."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Narrows the user's own permission, never widens it: staff without it see nothing here.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return self.inlines if obj else []

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """The service saved every related row already."""


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
    """Each model links to its release console (`release.admin_console`)."""

    list_display = ["repo_id", "title", "created_at", "console_link"]
    search_fields = ["org", "name", "title"]
    inlines = [VersionInline]

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: their `<path:object_id>/` would swallow `<id>/console/`.
        return ReleaseConsole(self).get_urls() + super().get_urls()

    @admin.display(description="release console")
    def console_link(self, model: Model) -> str:
        url = reverse("admin:release_model_console", args=[model.pk])
        return format_html(
            '<a href="{}">Console<span class="visually-hidden"> of {}</span></a>', url, model
        )

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
class VersionAdmin(ActionsNeedChangePermission, admin.ModelAdmin[Version]):
    list_display = ["__str__", "commit", "sealed_at", "created_at"]
    list_filter = ["model"]
    search_fields = ["name", "commit", "model__org", "model__name"]
    readonly_fields = ["commit", "sealed_at", "created_at", "manifest"]
    inlines = [ArtifactInline, FileInline]
    actions = ["seal"]

    def get_readonly_fields(self, request: HttpRequest, obj: Version | None = None) -> list[str]:
        return ["model", "name", *self.readonly_fields] if obj else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Version | None = None) -> bool:
        # A sealed version is read-only even to those allowed to change versions.
        return (obj is None or not obj.is_sealed) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Version | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Version, form: Any, change: bool) -> None:
        if not change:
            created = services.version_create(actor=request.user, model=obj.model, name=obj.name)
            obj.pk, obj.created_at = created.pk, created.created_at

    @admin.action(
        description="Seal the selected versions (freeze manifest and commit id)",
        permissions=["act"],
    )
    def seal(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        for version in queryset:
            try:
                sealed = services.version_seal(actor=request.user, version=version)
            except DomainError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"Sealed {sealed} as commit {sealed.commit}.")


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea, max_length=2000, help_text="Recorded in the audit log."
    )


@admin.register(Artifact)
class ArtifactAdmin(ActionsNeedChangePermission, admin.ModelAdmin[Artifact]):
    list_display = ["__str__", "phase", "phase_changed_at"]
    list_filter = ["phase", "version__model"]
    search_fields = ["name", "version__name", "version__model__org", "version__model__name"]
    readonly_fields = ["phase", "phase_changed_at"]
    # Phases move forward only through approved unlocks (Unlock admin); withdrawal is immediate.
    actions = ["withdraw"]

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

    @admin.action(description="Withdraw (emergency stop; asks for a reason)", permissions=["act"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> HttpResponse | None:
        assert isinstance(request.user, User)
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            for artifact in queryset:
                try:
                    services.artifact_withdraw(
                        actor=request.user, artifact=artifact, reason=form.cleaned_data["reason"]
                    )
                except DomainError as error:
                    self.message_user(request, f"{artifact}: {error.message}", messages.ERROR)
                else:
                    self.message_user(request, f"{artifact} is withdrawn.")
            return None
        return render(
            request,
            "admin/release/reason_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Withdraw artifacts",
                "warning": "Withdrawing stops serving these at once. It cannot be undone.",
                "action": "withdraw",
                "objects": queryset,
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


class IngestFileInline(ReadOnlyInline):
    model = IngestFile
    fields = readonly_fields = ("path", "artifact", "state", "size", "sha256", "error")
    show_change_link = False


class IngestForm(forms.ModelForm[IngestJob]):
    sources_text = forms.CharField(
        label="Sources",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One artifact per line: name=s3://staging-bucket/prefix/",
    )

    class Meta:
        model = IngestJob
        fields = ["model", "version_name"]

    def clean_sources_text(self) -> dict[str, str]:
        sources: dict[str, str] = {}
        for line in self.cleaned_data["sources_text"].splitlines():
            if not line.strip():
                continue
            name, sep, uri = line.strip().partition("=")
            if not sep or not name.strip() or not uri.strip():
                raise forms.ValidationError(f"{line!r}: expected name=s3://bucket/prefix/")
            if name.strip() in sources:
                raise forms.ValidationError(f"artifact {name.strip()!r} given twice")
            sources[name.strip()] = uri.strip()
        return sources


@admin.register(IngestJob)
class IngestJobAdmin(CreatedByServiceAdmin):
    """Start an ingest here (it runs on the workers); follow each file's state and errors."""

    form = IngestForm
    list_display = ["__str__", "state", "files_done", "created_by", "created_at", "finished_at"]
    list_filter = ["state"]
    inlines = [IngestFileInline]

    def get_readonly_fields(self, request: HttpRequest, obj: IngestJob | None = None) -> list[str]:
        if obj is None:
            return []
        return [
            "model",
            "version_name",
            "sources",
            "state",
            "version",
            "error",
            "created_by",
            "created_at",
            "finished_at",
        ]

    def get_fields(self, request: HttpRequest, obj: IngestJob | None = None) -> Any:
        if obj is None:
            return ["model", "version_name", "sources_text"]
        return self.get_readonly_fields(request, obj)

    def get_form(
        self,
        request: HttpRequest,
        obj: IngestJob | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        if obj is not None:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="files hashed")
    def files_done(self, job: IngestJob) -> str:
        done = job.files.filter(state__in=["done", "failed"]).count()
        return f"{done} / {job.files.count()}"

    def save_model(self, request: HttpRequest, obj: IngestJob, form: Any, change: bool) -> None:
        assert isinstance(request.user, User)
        job = services.ingest_start(
            actor=request.user,
            model=obj.model,
            version_name=obj.version_name,
            sources=form.cleaned_data["sources_text"],
        )
        obj.pk = job.pk


@admin.register(ReleasePolicy)
class ReleasePolicyAdmin(admin.ModelAdmin[ReleasePolicy]):
    list_display = ["model", "required_approvals", "required_roles"]


class UnlockApprovalInline(ReadOnlyInline):
    model = UnlockApproval
    fields = readonly_fields = ("approver", "decision", "roles", "comment", "created_at")
    show_change_link = False


class UnlockFileInline(ReadOnlyInline):
    model = UnlockFile
    fields = readonly_fields = ("file", "state", "bytes_done", "attempts", "lease_until", "error")
    show_change_link = False


@admin.register(Unlock)
class UnlockAdmin(ActionsNeedChangePermission, CreatedByServiceAdmin):
    """Schedule with the form; approve, reject and cancel with the actions. Times are stored in
    UTC and shown in TIME_ZONE."""

    list_display = ["__str__", "state", "not_before", "approvals_given", "progress", "created_by"]
    list_filter = ["state", "target_phase"]
    inlines = [UnlockApprovalInline, UnlockFileInline]
    actions = ["approve", "reject", "cancel"]
    filter_horizontal = ["artifacts"]

    def get_readonly_fields(self, request: HttpRequest, obj: Unlock | None = None) -> list[str]:
        if obj is None:
            return []
        return [
            "version",
            "artifacts",
            "target_phase",
            "not_before",
            "state",
            "required_approvals",
            "required_roles",
            "created_by",
            "created_at",
            "reason",
            "delayed_since",
            "flipped_at",
            "progress",
        ]

    def get_fields(self, request: HttpRequest, obj: Unlock | None = None) -> Any:
        if obj is None:
            return ["version", "artifacts", "target_phase", "not_before"]
        return self.get_readonly_fields(request, obj)

    @admin.display(description="approvals")
    def approvals_given(self, unlock: Unlock) -> str:
        given = unlock.approvals.filter(decision="approve").count()
        return f"{given} / {unlock.required_approvals}"

    @admin.display(description="pushed and verified")
    def progress(self, unlock: Unlock) -> str:
        p = unlock_progress(unlock=unlock)
        if not p.files_total:
            return "-"
        return (
            f"{p.files_done}/{p.files_total} files, "
            f"{filesizeformat(p.bytes_done)} of {filesizeformat(p.bytes_total)}"
        )

    def save_model(self, request: HttpRequest, obj: Unlock, form: Any, change: bool) -> None:
        assert isinstance(request.user, User)
        unlock = services.unlock_schedule(
            actor=request.user,
            version=form.cleaned_data["version"],
            artifacts=[a.name for a in form.cleaned_data["artifacts"]],
            target_phase=form.cleaned_data["target_phase"],
            not_before=form.cleaned_data["not_before"],
        )
        obj.pk = unlock.pk

    def _each(self, request: HttpRequest, queryset: QuerySet[Unlock], verb: str, call: Any) -> None:
        for unlock in queryset:
            try:
                call(unlock)
            except DomainError as error:
                self.message_user(request, f"{unlock}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{unlock}: {verb}.")

    @admin.action(description="Approve the selected unlocks", permissions=["act"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Unlock]) -> None:
        assert isinstance(request.user, User)
        user = request.user
        self._each(
            request,
            queryset,
            "approved",
            lambda unlock: services.unlock_approve(unlock=unlock, approver=user),
        )

    def _with_reason(
        self,
        request: HttpRequest,
        queryset: QuerySet[Unlock],
        action: str,
        title: str,
        done: str,
        call: Any,
    ) -> HttpResponse | None:
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            self._each(
                request,
                queryset,
                done,
                lambda unlock: call(unlock, form.cleaned_data["reason"]),
            )
            return None
        return render(
            request,
            "admin/release/reason_form.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "objects": queryset,
                "form": form,
                "action": action,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(
        description="Reject the selected unlocks (asks for a reason)", permissions=["act"]
    )
    def reject(self, request: HttpRequest, queryset: QuerySet[Unlock]) -> HttpResponse | None:
        assert isinstance(request.user, User)
        user = request.user
        return self._with_reason(
            request,
            queryset,
            "reject",
            "Reject unlocks",
            "rejected",
            lambda unlock, reason: services.unlock_reject(
                unlock=unlock, approver=user, comment=reason
            ),
        )

    @admin.action(
        description="Cancel the selected unlocks (asks for a reason)", permissions=["act"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[Unlock]) -> HttpResponse | None:
        assert isinstance(request.user, User)
        user = request.user
        return self._with_reason(
            request,
            queryset,
            "cancel",
            "Cancel unlocks",
            "cancelled",
            lambda unlock, reason: services.unlock_cancel(unlock=unlock, actor=user, reason=reason),
        )


@admin.register(DownloadDaily)
class DownloadDailyAdmin(admin.ModelAdmin[DownloadDaily]):
    """Downloads per model, version and day (written in batches from the Redis buffer)."""

    list_display = ["model", "version", "day", "count"]
    list_filter = ["model", "day"]
    date_hierarchy = "day"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DownloadDaily | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DownloadDaily | None = None) -> bool:
        return False
