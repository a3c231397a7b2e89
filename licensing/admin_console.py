"""Staff pages of the licensing admin beyond Django's own: the export of the access-request
review list (CSV and JSON, exactly the filtered list on screen), signing key rotation and
retirement, and the audit chain check.

The ModelAdmins mount these through `admin_site.admin_view` (staff only, CSRF-protected), and
each page asks for the same model permission as the admin page it extends. GET only reads;
every change is a POST through `licensing.keys`, whose refusals are shown."""

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from config.errors import DomainError
from licensing import keys
from licensing.models import AccessRequest, AuditEvent, GatePolicy, SigningKey
from licensing.selectors import audit_chain_verify, signing_keys_with_live_grants

# --- Exporting the review list ----------------------------------------------------------------

# A spreadsheet runs a cell starting with one of these as a formula (a tab or carriage return
# may hide one behind it): OWASP's "CSV injection". Requesters choose their answers and names.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

EXPORT_COLUMNS = [
    "id",
    "model",
    "user",
    "email",
    "status",
    "created_at",
    "decided_at",
    "reviewer",
    "reason",
    "may_reapply",
    "license",
    "license_sha256",
    "ip",
]


def csv_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading single
    quote (OWASP's advice; the quote is visible, which is the point)."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def access_request_record(item: AccessRequest) -> dict[str, Any]:
    return {
        "id": item.pk,
        "model": str(item.model),
        "user": item.user.get_username(),
        "email": item.user.email,
        "status": item.status,
        "created_at": _iso(item.created_at),
        "decided_at": _iso(item.decided_at),
        "reviewer": item.reviewer.get_username() if item.reviewer else "",
        "reason": item.reason,
        "may_reapply": item.may_reapply,
        "license": f"{item.license.slug} {item.license.version}" if item.license else "",
        "license_sha256": item.license_sha256,
        "ip": item.ip or "",
        "answers": item.answers if isinstance(item.answers, dict) else {},
    }


def answer_names(queryset: QuerySet[AccessRequest]) -> list[str]:
    """Answer columns: the gate policies' form fields in their order, then any other answer
    found (a field since removed from the form), sorted."""
    names: list[str] = []
    policies = GatePolicy.objects.filter(model__in=queryset.order_by().values("model_id"))
    for fields in policies.values_list("form_fields", flat=True):
        for field in fields or []:
            name = field.get("name") if isinstance(field, dict) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    extra: set[str] = set()
    for answers in queryset.order_by().values_list("answers", flat=True).iterator():
        if isinstance(answers, dict):
            extra.update(key for key in answers if key not in names)
    return names + sorted(extra)


class _Echo:
    """csv.writer's file: hand each formatted line straight back, to stream it."""

    def write(self, value: str) -> str:
        return value


def _export_name(extension: str) -> str:
    return f"access-requests-{timezone.now().astimezone(UTC):%Y%m%dT%H%M%SZ}.{extension}"


def access_requests_csv(queryset: QuerySet[AccessRequest]) -> StreamingHttpResponse:
    """The list as CSV, streamed (a review queue can be long), every cell made formula-safe.
    UTF-8 with a byte-order mark, so that spreadsheets read names in any script correctly."""
    names = answer_names(queryset)
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        header = EXPORT_COLUMNS + [f"answer:{name}" for name in names]
        yield "\ufeff" + writer.writerow([csv_safe(title) for title in header])
        for item in queryset.iterator(chunk_size=500):
            record = access_request_record(item)
            cells = [record[column] for column in EXPORT_COLUMNS]
            cells += [record["answers"].get(name) for name in names]
            yield writer.writerow([csv_safe(_cell(cell)) for cell in cells])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_export_name("csv")}"'
    return response


def access_requests_json(
    queryset: QuerySet[AccessRequest], *, filters: dict[str, str]
) -> JsonResponse:
    records = [access_request_record(item) for item in queryset.iterator(chunk_size=500)]
    response = JsonResponse(
        {
            "exported_at": _iso(timezone.now()),
            "filters": filters,
            "count": len(records),
            "access_requests": records,
        },
        encoder=DjangoJSONEncoder,
        json_dumps_params={"ensure_ascii": False, "indent": 2},
    )
    response["Content-Disposition"] = f'attachment; filename="{_export_name("json")}"'
    return response


# --- Signing keys -------------------------------------------------------------------------------


def _staff_user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # admin_view lets only active staff in
    return request.user


class RotateForm(forms.Form):
    purpose = forms.ChoiceField(
        choices=[
            (SigningKey.Purpose.GRANTS.value, "grants: signs license grants (JWS)"),
            (SigningKey.Purpose.MODELS.value, "models: signs versions (OpenSSF Model Signing)"),
        ],
        widget=forms.RadioSelect,
    )
    curve = forms.ChoiceField(
        choices=[(curve, curve) for curve in keys.CURVES],
        initial="P-256",
        help_text="P-256 (ES256) is what every JOSE library and model_signing verify.",
    )
    confirm = forms.BooleanField(
        label="Retire the purpose's current key now and sign with a new one from now on",
        help_text="What the old key signed still verifies: its public half stays published.",
    )


def _keys_context(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> dict[str, Any]:
    return {**model_admin.admin_site.each_context(request), "opts": SigningKey._meta}


def _may_change_keys(request: HttpRequest) -> None:
    """Rotating and retiring are for staff holding the signing keys' change permission (the
    admin shows keys read-only, so no other page uses it)."""
    if not request.user.has_perm("licensing.change_signingkey"):
        raise PermissionDenied


def signing_key_rotate_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> Any:
    _may_change_keys(request)
    form = RotateForm(
        request.POST if request.method == "POST" else None,
        initial={"purpose": request.GET.get("purpose")},
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                key = keys.signing_key_rotate(
                    purpose=form.cleaned_data["purpose"],
                    actor=_staff_user(request),
                    curve=form.cleaned_data["curve"],
                )
            except DomainError as error:
                messages.error(request, f"Not rotated: {error.message}")
                status = error.status
            else:
                messages.success(request, f"Key {key.kid} now signs for {key.purpose}.")
                return redirect("admin:licensing_signingkey_changelist")
        else:
            status = 400
    return render(
        request,
        "admin/licensing/signingkey/action.html",
        {
            **_keys_context(model_admin, request),
            "title": "Rotate a signing key",
            "form": form,
            "keys": signing_keys_with_live_grants().filter(state=SigningKey.State.ACTIVE),
            "button": "Rotate",
        },
        status=status,
    )


def signing_key_retire_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, key_id: int
) -> HttpResponse:
    _may_change_keys(request)
    key = get_object_or_404(signing_keys_with_live_grants(), pk=key_id)
    status = 200
    if request.method == "POST":
        try:
            keys.signing_key_retire(key=key, actor=_staff_user(request))
        except DomainError as error:
            messages.error(request, f"Not retired: {error.message}")
            status = error.status
        else:
            messages.success(
                request,
                f"Key {key.kid} is retired; nothing signs for {key.purpose} until a key is "
                "rotated in.",
            )
            return redirect("admin:licensing_signingkey_changelist")
    return render(
        request,
        "admin/licensing/signingkey/action.html",
        {
            **_keys_context(model_admin, request),
            "title": f"Retire signing key {key.kid}",
            "keys": [key],
            "warning": (
                f"From now on nothing signs for {key.purpose} until a new key is rotated in: "
                + (
                    "access approvals fail to issue grants."
                    if key.purpose == SigningKey.Purpose.GRANTS
                    else "versions cannot be sealed."
                )
                + " What this key signed still verifies. To replace it in one step, rotate "
                "instead."
            ),
            "button": "Retire",
            "danger": True,
        },
        status=status,
    )


# --- The audit chain ------------------------------------------------------------------------------


def audit_verify_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> HttpResponse:
    """Recompute the whole chain now (a read: it changes nothing, so GET)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    report = audit_chain_verify()
    broken = None
    if report.broken_at is not None:
        broken = AuditEvent.objects.filter(pk=report.broken_at).first()
    return render(
        request,
        "admin/licensing/auditevent/verify.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": AuditEvent._meta,
            "title": "Audit chain check",
            "report": report,
            "broken": broken,
            "checked_at": timezone.now(),
            "total": AuditEvent.objects.count(),
        },
    )
