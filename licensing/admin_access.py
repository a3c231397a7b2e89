"""Admin pages of the access flow. Decisions go through `licensing.access` services (checked,
audited, notified); what people accepted and what was signed is never edited here."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from config.admin_permissions import ActionsNeedChangePermission
from config.errors import DomainError
from licensing import access, admin_console
from licensing.models import AccessRequest, GatePolicy, Grant, License, PartnerOrganisation


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea,
        max_length=500,
        help_text="Shown to the person concerned and kept in the audit log.",
    )
    may_reapply = forms.BooleanField(required=False, label="They may apply again")


class RevokeForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea,
        max_length=500,
        help_text="Shown to the grant's holder and kept in the audit log.",
    )


def _reviewer(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # the admin lets only staff in
    return request.user


@admin.register(License)
class LicenseAdmin(ActionsNeedChangePermission, admin.ModelAdmin[License]):
    list_display = ["title", "slug", "version", "published_at", "commercial_use", "mau_cap"]
    # An acceptable-use link typed without a scheme is an https one (Django 6's default).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ["text_sha256", "published_at", "created_at"]
    actions = ["publish"]

    def get_readonly_fields(self, request: HttpRequest, obj: License | None = None) -> Any:
        if obj is not None and obj.published_at is not None:
            # Published: people accepted exactly this text.
            return [f.name for f in License._meta.fields]
        return self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: License | None = None) -> bool:
        # A published license is never deleted, not even by those allowed to delete licenses.
        published = obj is not None and obj.published_at is not None
        return not published and super().has_delete_permission(request, obj)

    @admin.action(description="Publish (freeze the text and its sha256)", permissions=["act"])
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


def _answers_in_form_order(item: AccessRequest) -> list[tuple[str, str, Any]]:
    """(name, label, answer) in the order of the policy's form (PostgreSQL's JSONB keeps keys
    in its own order), then answers to fields since removed. The policy's fields come annotated
    by `get_queryset`, so a list page costs no query per row."""
    answers = item.answers if isinstance(item.answers, dict) else {}
    fields = getattr(item, "form_fields", None)
    if fields is None:
        policy = GatePolicy.objects.filter(model_id=item.model_id).values("form_fields").first()
        fields = policy["form_fields"] if policy else []
    labels = {
        f["name"]: str(f.get("label") or f["name"])
        for f in fields or []
        if isinstance(f, dict) and isinstance(f.get("name"), str)
    }
    order = [name for name in labels if name in answers]
    order += sorted(name for name in answers if name not in labels)
    return [(name, labels.get(name, name), answers[name]) for name in order]


@admin.register(AccessRequest)
class AccessRequestAdmin(ActionsNeedChangePermission, admin.ModelAdmin[AccessRequest]):
    """The review queue: filter by model and status, read the form answers, decide one (on its
    page) or many (the actions), and export the filtered list as CSV or JSON."""

    list_display = [
        "user",
        "model",
        "status",
        "answers_summary",
        "created_at",
        "decided_at",
        "reviewer",
    ]
    list_filter = ["status", "model", "created_at"]
    search_fields = ["user__username", "user__email", "model__org", "model__name"]
    list_select_related = ["user", "model", "reviewer", "license"]
    actions = ["approve", "reject", "cancel"]
    fields = readonly_fields = (
        "user",
        "user_email",
        "model",
        "status",
        "answers_display",
        "license",
        "license_sha256",
        "created_at",
        "ip",
        "user_agent",
        "reviewer",
        "decided_at",
        "reason",
        "may_reapply",
    )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "export.<slug:fmt>",
                self.admin_site.admin_view(self.export_view),
                name="licensing_accessrequest_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponseBase:
        """The list exactly as filtered, searched and ordered on screen, every page of it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if fmt not in ("csv", "json"):
            raise Http404("export as csv or json")
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("unknown filter")
        queryset = queryset.select_related("user", "model", "reviewer", "license")
        if fmt == "csv":
            return admin_console.access_requests_csv(queryset)
        filters = {key: str(value) for key, value in request.GET.items()}
        return admin_console.access_requests_json(queryset, filters=filters)

    @admin.display(description="email")
    def user_email(self, item: AccessRequest) -> str:
        return item.user.email

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessRequest]:
        return (
            super().get_queryset(request).annotate(form_fields=F("model__gate_policy__form_fields"))
        )

    @admin.display(description="answers")
    def answers_summary(self, item: AccessRequest) -> str:
        text = "; ".join(f"{name}: {value}" for name, _, value in _answers_in_form_order(item))
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="form answers")
    def answers_display(self, item: AccessRequest) -> str:
        answers = _answers_in_form_order(item)
        if not answers:
            return "-"
        rows = format_html_join(
            "", "<dt>{}</dt><dd>{}</dd>", ((label, value) for _, label, value in answers)
        )
        return format_html("<dl>{}</dl>", rows)

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

    @admin.action(description="Approve (issue signed grants)", permissions=["act"])
    def approve(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> None:
        reviewer = _reviewer(request)
        self._each(
            request,
            queryset,
            lambda r: access.access_request_approve(request=r, reviewer=reviewer),
            "approved",
        )

    @admin.action(
        description="Cancel approval (back to pending; grants revoked)", permissions=["act"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> None:
        reviewer = _reviewer(request)
        self._each(
            request,
            queryset,
            lambda r: access.access_request_cancel(request=r, reviewer=reviewer),
            "moved back to pending",
        )

    @admin.action(description="Reject (asks for a reason)", permissions=["act"])
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


class GrantStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("live", "live"),
            ("revoked", "revoked"),
            ("suspended", "suspended"),
            ("expired", "expired"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        match self.value():
            case "live":
                return queryset.filter(
                    unexpired, revoked_at__isnull=True, suspended_at__isnull=True
                )
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
            case "suspended":
                return queryset.filter(revoked_at__isnull=True, suspended_at__isnull=False)
            case "expired":
                return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


@admin.register(Grant)
class GrantAdmin(ActionsNeedChangePermission, admin.ModelAdmin[Grant]):
    """Search by user (name or email), model (`org/name`, or either part) or grant id (jti);
    revoke with a reason, one (on its page) or many."""

    list_display = [
        "jti",
        "user",
        "model",
        "kid",
        "issued_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
        "suspended_at",
    ]
    list_filter = [GrantStateFilter, "model"]
    search_fields = ["jti", "user__username", "user__email", "model__org", "model__name", "kid"]
    search_help_text = "User name or email, org/name of a model, or a grant id (jti)."
    list_select_related = ["user", "model"]
    actions = ["revoke", "resume"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Grant], search_term: str
    ) -> tuple[QuerySet[Grant], bool]:
        """Also `org/name` for a model, as people write it (with other terms: both match)."""
        terms = search_term.split()
        repo_ids = [t for t in terms if t.count("/") == 1 and all(t.split("/"))]
        rest = " ".join(t for t in terms if t not in repo_ids)
        results, may_have_duplicates = super().get_search_results(request, queryset, rest)
        if repo_ids:
            by_repo = Q()
            for term in repo_ids:
                org, name = term.split("/")
                by_repo |= Q(model__org__iexact=org, model__name__iexact=name)
            results = results.filter(by_repo)
        return results, may_have_duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False

    @admin.action(description="Revoke (asks for a reason)", permissions=["act"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Grant]) -> HttpResponse | None:
        form = RevokeForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            revoked = 0
            for grant in queryset:
                try:
                    access.grant_revoke(
                        grant=grant, actor=_reviewer(request), reason=form.cleaned_data["reason"]
                    )
                except DomainError as error:
                    self.message_user(request, f"{grant}: {error.message}", messages.ERROR)
                else:
                    revoked += 1
            if revoked:
                self.message_user(request, f"{revoked} grant(s) revoked.", messages.SUCCESS)
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

    @admin.action(
        description="Lift the suspension of these grants' models (asks for a reason)",
        permissions=["act"],
    )
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
