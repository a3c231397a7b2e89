"""Admin pages of the access flow. Decisions go through `licensing.access` services (checked,
audited, notified); what people accepted and what was signed is never edited here."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.errors import DomainError
from licensing import access
from licensing.models import AccessRequest, GatePolicy, Grant, License, PartnerOrganisation


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea,
        max_length=500,
        help_text="Shown to the person concerned and kept in the audit log.",
    )
    may_reapply = forms.BooleanField(required=False, label="They may apply again")


def _reviewer(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # the admin lets only staff in
    return request.user


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin[License]):
    list_display = ["title", "slug", "version", "published_at", "commercial_use", "mau_cap"]
    readonly_fields = ["text_sha256", "published_at", "created_at"]
    actions = ["publish"]

    def get_readonly_fields(self, request: HttpRequest, obj: License | None = None) -> Any:
        if obj is not None and obj.published_at is not None:
            # Published: people accepted exactly this text.
            return [f.name for f in License._meta.fields]
        return self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: License | None = None) -> bool:
        return obj is None or obj.published_at is None

    @admin.action(description="Publish (freeze the text and its sha256)")
    def publish(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for license in queryset:
            try:
                access.license_publish(actor=_reviewer(request), license=license)
            except DomainError as error:
                self.message_user(request, f"{license}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{license} is published.")


@admin.register(PartnerOrganisation)
class PartnerOrganisationAdmin(admin.ModelAdmin[PartnerOrganisation]):
    filter_horizontal = ["members"]
    search_fields = ["name"]


@admin.register(GatePolicy)
class GatePolicyAdmin(admin.ModelAdmin[GatePolicy]):
    list_display = ["model", "license", "approval_mode", "grant_ttl_days"]
    filter_horizontal = ["partners"]

    def save_model(self, request: HttpRequest, obj: GatePolicy, form: Any, change: bool) -> None:
        fields = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name not in ("model", "partners")
        }
        policy = access.gate_policy_set(actor=_reviewer(request), model=obj.model, **fields)
        obj.pk = policy.pk


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin[AccessRequest]):
    """The review list: filter by model and status, decide in bulk with the actions."""

    list_display = ["user", "model", "status", "created_at", "decided_at", "reviewer"]
    list_filter = ["status", "model"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "model", "reviewer"]
    actions = ["approve", "reject", "cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AccessRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AccessRequest | None = None) -> bool:
        return False

    def _each(
        self, request: HttpRequest, queryset: QuerySet[AccessRequest], call: Any, done: str
    ) -> None:
        ok = 0
        for item in queryset:
            try:
                call(item)
            except DomainError as error:
                self.message_user(request, f"{item}: {error.message}", messages.ERROR)
            else:
                ok += 1
        self.message_user(request, f"{ok} request(s) {done}.")

    @admin.action(description="Approve (issue signed grants)")
    def approve(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> None:
        reviewer = _reviewer(request)
        self._each(
            request,
            queryset,
            lambda r: access.access_request_approve(request=r, reviewer=reviewer),
            "approved",
        )

    @admin.action(description="Cancel approval (back to pending; grants revoked)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> None:
        reviewer = _reviewer(request)
        self._each(
            request,
            queryset,
            lambda r: access.access_request_cancel(request=r, reviewer=reviewer),
            "moved back to pending",
        )

    @admin.action(description="Reject (asks for a reason)")
    def reject(
        self, request: HttpRequest, queryset: QuerySet[AccessRequest]
    ) -> HttpResponse | None:
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            reviewer = _reviewer(request)
            self._each(
                request,
                queryset,
                lambda r: access.access_request_reject(
                    request=r,
                    reviewer=reviewer,
                    reason=form.cleaned_data["reason"],
                    may_reapply=form.cleaned_data["may_reapply"],
                ),
                "rejected",
            )
            return None
        return render(
            request,
            "admin/release/reason_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reject access requests",
                "action": "reject",
                "objects": queryset,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin[Grant]):
    list_display = ["jti", "user", "model", "issued_at", "expires_at", "revoked_at", "suspended_at"]
    list_filter = ["model"]
    search_fields = ["jti", "user__username"]
    list_select_related = ["user", "model"]
    actions = ["revoke", "resume"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False

    @admin.action(description="Revoke (asks for a reason)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Grant]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            for grant in queryset:
                try:
                    access.grant_revoke(
                        grant=grant, actor=_reviewer(request), reason=form.cleaned_data["reason"]
                    )
                except DomainError as error:
                    self.message_user(request, f"{grant}: {error.message}", messages.ERROR)
            return None
        return render(
            request,
            "admin/release/reason_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Revoke grants",
                "action": "revoke",
                "objects": queryset,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Lift the suspension of these grants' models (asks for a reason)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Grant]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            for model in {grant.model for grant in queryset.select_related("model")}:
                count = access.grants_resume_for_model(
                    model=model, actor=_reviewer(request), reason=form.cleaned_data["reason"]
                )
                self.message_user(request, f"{model}: {count} grant(s) resumed.")
            return None
        return render(
            request,
            "admin/release/reason_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Resume suspended grants",
                "action": "resume",
                "objects": queryset,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )
