"""Portal pages of the access flow: request access to a gated model (license and form), the
status of your request, your download tokens, and everything you asked for and hold.

Each page reads only the signed-in person's own rows (`licensing.selectors`), and every change
goes through the same services as the API (`licensing.access`, `licensing.tokens`).
"""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import pycountry
from allauth.account.adapter import get_adapter
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from config.errors import DomainError, NotAllowed
from licensing import access, tokens
from licensing.models import AccessRequest, DownloadToken, GatePolicy, Grant, License
from licensing.request_forms import InvalidForm
from licensing.selectors import (
    access_request_latest,
    access_requests_of,
    grant_live_for,
    grants_of,
    tokens_of,
)
from release.models import Model
from release.selectors import model_get_visible

Status = AccessRequest.Status


def _me(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required let only signed-in people in
    return request.user


def _model(request: HttpRequest, org: str, name: str) -> Model:
    model = model_get_visible(user=request.user, org=org, name=name)
    if model is None:
        raise Http404(f"no model {org}/{name}")
    return model


def _policy(model: Model) -> GatePolicy:
    policy = GatePolicy.objects.select_related("license").filter(model=model).first()
    if policy is None or policy.license is None:
        raise Http404(f"{model} does not take access requests")
    return policy


def _client_ip(request: HttpRequest) -> str | None:
    """The client's address, from X-Forwarded-For only as far as TRUSTED_PROXY_COUNT says
    (the same rule allauth's sign-in limits use)."""
    try:
        return str(get_adapter(request).get_client_ip(request))
    except PermissionDenied:
        return None


# --- Request access ----------------------------------------------------------------------------


@cache
def _countries() -> list[tuple[str, str]]:
    names = ((c.alpha_2, getattr(c, "common_name", c.name)) for c in pycountry.countries)
    return sorted(names, key=lambda pair: pair[1])


@dataclass(frozen=True)
class FormRow:
    """One field of a gate policy's form, ready for the template."""

    name: str
    label: str
    type: str
    required: bool
    options: list[tuple[str, str]]
    value: Any
    error: str

    @property
    def id(self) -> str:
        return f"field-{self.name}"


def _form_rows(
    fields: list[dict[str, Any]], values: dict[str, Any], errors: dict[str, str]
) -> list[FormRow]:
    rows = []
    for field in fields:
        kind = field["type"]
        options: list[tuple[str, str]] = []
        if kind == "select":
            options = [(option, option) for option in field["options"]]
        elif kind == "country":
            options = _countries()
        rows.append(
            FormRow(
                name=field["name"],
                label=str(field.get("label") or field["name"].replace("_", " ").capitalize()),
                type=kind,
                required=bool(field.get("required")),
                options=options,
                value=values.get(field["name"], False if kind == "checkbox" else ""),
                error=errors.get(field["name"], ""),
            )
        )
    return rows


def _answers_from_post(fields: list[dict[str, Any]], data: Any) -> dict[str, Any]:
    """The posted answers in the shape the service validates: strings, and booleans for
    checkboxes (an unticked box is not sent at all). Empty strings are left to the service,
    which knows which fields are required."""
    answers: dict[str, Any] = {}
    for field in fields:
        name = field["name"]
        if field["type"] == "checkbox":
            answers[name] = data.get(name) == "on"
        else:
            answers[name] = data.get(name, "")
    return answers


def _accepted_license(model: Model, sha256: str) -> License | None:
    # As in the API: licenses may share a text; the model's current one wins.
    accepted = License.objects.filter(text_sha256=sha256, published_at__isnull=False)
    return accepted.filter(gatepolicy__model=model).first() or accepted.first()


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def access_request(request: HttpRequest, org: str, name: str) -> HttpResponse:
    """The license text and the model's form; one button accepts the license and submits."""
    model = _model(request, org, name)
    policy = _policy(model)
    me = _me(request)
    latest = access_request_latest(user=me, model_id=model.pk)
    if latest is not None and (
        latest.status in (Status.PENDING, Status.APPROVED)
        or (latest.status == Status.REJECTED and not latest.may_reapply)
    ):
        # Nothing to ask for: the status page says where things stand.
        return redirect("portal-access-status", org=model.org, name=model.name)

    license = policy.license
    assert license is not None  # _policy checked
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    problem = ""
    status = 200
    if request.method == "POST":
        values = _answers_from_post(policy.form_fields, request.POST)
        accepted = _accepted_license(model, request.POST.get("license_sha256", ""))
        try:
            if accepted is None:
                raise NotAllowed(
                    "that license text is unknown: read the license below and accept it again",
                    code="license_not_found",
                )
            access.access_request_submit(
                user=me,
                model=model,
                license=accepted,
                answers=values,
                ip=_client_ip(request),
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
        except InvalidForm as error:
            errors = dict(error.detail or {})
            problem = "Please correct the answers marked below." if errors else error.message
            status = 400
        except NotAllowed as error:
            if error.code in ("already_requested", "reapply_not_allowed"):
                messages.info(request, error.message)
                return redirect("portal-access-status", org=model.org, name=model.name)
            # license_outdated: the page shows the current license now; accept that one.
            problem = error.message[:1].upper() + error.message[1:] + "."
            status = 400
        else:
            messages.success(request, f"Your request for {model.repo_id} was sent.")
            return redirect("portal-access-status", org=model.org, name=model.name)

    return render(
        request,
        "licensing/access_request.html",
        {
            "model": model,
            "policy": policy,
            "license": license,
            "rows": _form_rows(policy.form_fields, values, errors),
            "problem": problem,
            "reapplying": latest is not None and latest.status == Status.REJECTED,
        },
        status=status,
    )


# --- Status of your request ---------------------------------------------------------------------


@dataclass(frozen=True)
class GrantView:
    grant: Grant
    state: str  # live, revoked, suspended, expired, superseded (the license changed)


def _grant_state(grant: Grant, *, current_license_id: int | None) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if grant.suspended_at is not None:
        return "suspended"
    if grant.expires_at is not None and grant.expires_at <= timezone.now():
        return "expired"
    if current_license_id is not None and grant.license_id != current_license_id:
        return "superseded"
    return "live"


@never_cache
@login_required
def access_status(request: HttpRequest, org: str, name: str) -> HttpResponse:
    """Where your request for this model stands: pending (withdraw it), approved (download the
    signed grant), rejected with the reason (apply again when allowed), or none yet."""
    model = _model(request, org, name)
    me = _me(request)
    policy = GatePolicy.objects.select_related("license").filter(model=model).first()
    latest = access_request_latest(user=me, model_id=model.pk)
    live = grant_live_for(user=me, model_id=model.pk)
    grants = [
        GrantView(g, _grant_state(g, current_license_id=policy.license_id if policy else None))
        for g in grants_of(user=me).filter(model=model).order_by("-issued_at")
    ]
    takes_requests = bool(policy and policy.license)
    labels = {
        f["name"]: f.get("label") or f["name"] for f in (policy.form_fields if policy else [])
    }
    answers = [
        (labels.get(key, key), "yes" if value is True else "no" if value is False else value)
        for key, value in (latest.answers.items() if latest else [])
    ]
    may_request = takes_requests and (
        latest is None
        or latest.status == Status.WITHDRAWN
        or (latest.status == Status.REJECTED and latest.may_reapply)
    )
    return render(
        request,
        "licensing/access_status.html",
        {
            "model": model,
            "latest": latest,
            "answers": answers,
            "live_grant": live,
            "grants": grants,
            "takes_requests": takes_requests,
            "may_request": may_request,
            "license": policy.license if policy else None,
        },
    )


@login_required
@require_POST
def access_withdraw(request: HttpRequest, org: str, name: str) -> HttpResponse:
    """Take back your pending request for this model."""
    model = _model(request, org, name)
    me = _me(request)
    latest = access_request_latest(user=me, model_id=model.pk)
    if latest is None:
        raise Http404("you have no request for this model")
    try:
        access.access_request_withdraw(request=latest, user=me)
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Your request for {model.repo_id} was withdrawn.")
    return redirect("portal-access-status", org=model.org, name=model.name)


# --- Everything you asked for and hold ---------------------------------------------------------


@never_cache
@login_required
def my_access(request: HttpRequest) -> HttpResponse:
    """Every request you made and every grant you hold, with its status."""
    me = _me(request)
    requests = list(access_requests_of(user=me))
    current = dict(
        GatePolicy.objects.filter(model__in={r.model_id for r in requests}).values_list(
            "model_id", "license_id"
        )
    )
    grants = [
        GrantView(g, _grant_state(g, current_license_id=current.get(g.model_id)))
        for g in grants_of(user=me).order_by("-issued_at")
    ]
    return render(request, "licensing/my_access.html", {"requests": requests, "grants": grants})


# --- Download tokens ---------------------------------------------------------------------------

EXPIRY_CHOICES = [
    ("30", "30 days"),
    ("7", "7 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("never", "Never"),
]


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What uses it, e.g. “training cluster” or “laptop”."
    )
    models = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Limit it to these models (org/name, separated by commas or spaces). "
        "Empty: every model you have access to.",
    )
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="30", label="Expires after")

    def clean_models(self) -> list[str]:
        repo_ids: list[str] = self.cleaned_data["models"].replace(",", " ").split()
        bad = [repo_id for repo_id in repo_ids if repo_id.count("/") != 1]
        if bad:
            raise forms.ValidationError(f"Name models as org/name: {', '.join(bad)}")
        return repo_ids


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    """Your tokens (name, last use, expiry) and a form for a new one. A new token's value is
    shown in this response only: it is never stored in the clear, not even in the session."""
    me = _me(request)
    created: tuple[DownloadToken, str] | None = None
    form = TokenCreateForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            days = form.cleaned_data["expires"]
            try:
                created = tokens.token_create(
                    user=me,
                    name=form.cleaned_data["name"],
                    models=form.cleaned_data["models"],
                    expires_at=None
                    if days == "never"
                    else timezone.now() + timedelta(days=int(days)),
                )
            except DomainError as error:
                form.add_error(None, error.message)
        if created is None:
            status = 400
        else:
            form = TokenCreateForm()
    return render(
        request,
        "licensing/tokens.html",
        {
            "tokens": list(tokens_of(user=me)),
            "form": form,
            "created": created[0] if created else None,
            "secret": created[1] if created else "",
            "now": timezone.now(),
        },
        status=status,
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Confirm (GET), then revoke (POST) one of your tokens. Someone else's token is a 404."""
    me = _me(request)
    token = tokens_of(user=me).filter(pk=token_id).first()
    if token is None:
        raise Http404("no such token of yours")
    if request.method == "POST":
        try:
            tokens.token_revoke(token=token, user=me)
        except DomainError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Token “{token.name}” was revoked.")
        return redirect("portal-tokens")
    return render(request, "licensing/token_revoke.html", {"token": token})
