from typing import Any

from allauth.account import admin as allauth_admin
from allauth.account.models import EmailAddress
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from config.admin_permissions import ActionsNeedChangePermission
from config.errors import DomainError
from licensing import admin_console, notifications
from licensing.models import AuditEvent, SigningKey, WebhookDelivery, WebhookEndpoint
from licensing.selectors import signing_keys_with_live_grants


class AuditActorFilter(admin.SimpleListFilter):
    """Who did it: the people who appear in the log, and the service itself."""

    title = "actor"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        actors = AuditEvent.objects.order_by("actor").values_list("actor", flat=True).distinct()
        return [(actor or "-", actor or "the service (no person)") for actor in actors[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(actor="" if value == "-" else value)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Append-only: no one adds, edits or deletes events here. "Verify the chain" recomputes
    every hash (like `manage.py verify_audit`) and names the first event that was tampered with.
    Search finds a subject id, an actor or an action."""

    list_display = ["id", "created_at", "actor", "action", "subject_type", "subject_id"]
    list_filter = ["action", "subject_type", AuditActorFilter, "created_at"]
    search_fields = ["actor", "subject_id", "action"]
    date_hierarchy = "created_at"

    def get_urls(self) -> list[URLPattern]:
        verify = self.admin_site.admin_view(
            lambda request: admin_console.audit_verify_view(self, request)
        )
        return [
            path("verify/", verify, name="licensing_auditevent_verify"),
            *super().get_urls(),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin[SigningKey]):
    """Keys are never edited: they change only through `licensing.keys` (rotate, retire), from
    the pages here or `manage.py signing_key`, each audited. The encrypted private key is not
    shown, not even as ciphertext."""

    list_display = [
        "kid",
        "purpose",
        "alg",
        "state",
        "created_at",
        "retired_at",
        "live_grants",
        "retire_link",
    ]
    list_filter = ["purpose", "state"]
    search_fields = ["kid"]
    fields = readonly_fields = (
        "kid",
        "purpose",
        "algorithm",
        "state",
        "created_at",
        "retired_at",
        "live_grants",
        "public_pem",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SigningKey]:
        return signing_keys_with_live_grants()

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "rotate/",
                wrap(lambda request: admin_console.signing_key_rotate_view(self, request)),
                name="licensing_signingkey_rotate",
            ),
            path(
                "<int:key_id>/retire/",
                wrap(
                    lambda request, key_id: admin_console.signing_key_retire_view(
                        self, request, key_id
                    )
                ),
                name="licensing_signingkey_retire",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="algorithm", ordering="algorithm")
    def alg(self, key: SigningKey) -> str:
        return key.algorithm  # ES256, not its long label: the list has many columns

    @admin.display(description="live grants signed", ordering="live_grants")
    def live_grants(self, key: SigningKey) -> int:
        """Grants it signed that are neither revoked nor expired: while there are any, a
        retired grants key stays in the JWKS."""
        return int(getattr(key, "live_grants", 0))

    @admin.display(description="retire")
    def retire_link(self, key: SigningKey) -> str:
        if key.state != SigningKey.State.ACTIVE:
            return "-"
        url = reverse("admin:licensing_signingkey_retire", args=[key.pk])
        return format_html(
            '<a href="{}">Retire<span class="visually-hidden"> {}</span>…</a>', url, key.kid
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False


# The access flow (licenses, policies, requests, grants) has its own module.
from licensing import admin_access  # noqa: E402, F401


class WebhookEndpointForm(forms.ModelForm[WebhookEndpoint]):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[(event, event) for event in notifications.EVENTS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["model", "url", "events", "active"]

    def clean_url(self) -> str:
        try:
            return notifications.webhook_url_check(self.cleaned_data["url"])
        except DomainError as error:
            raise forms.ValidationError(error.message) from None


def _staff_user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # the admin lets only staff in
    return request.user


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ActionsNeedChangePermission, admin.ModelAdmin[WebhookEndpoint]):
    """Endpoints change through `licensing.notifications` services (URL checks, audit). The
    secret is shown once, when it is made or rotated, and never again."""

    form = WebhookEndpointForm
    list_display = ["id", "model", "url", "events", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "model__org", "model__name"]
    actions = ["rotate_secret"]

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> Any:
        return ["model", "created_at"] if obj is not None else []

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookEndpoint | None = None
    ) -> bool:
        return False  # pause it instead: its delivery log stays

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:  # e.g. the host's DNS changed between form and save
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        if change:
            notifications.webhook_endpoint_update(
                actor=_staff_user(request),
                endpoint=obj,
                url=data["url"],
                events=data["events"],
                active=data["active"],
            )
            return
        endpoint, secret = notifications.webhook_endpoint_create(
            actor=_staff_user(request),
            model=data["model"],
            url=data["url"],
            events=data["events"],
            active=data["active"],
        )
        obj.pk, obj.created_at = endpoint.pk, endpoint.created_at
        self._show_secret(request, endpoint, secret)

    def _show_secret(self, request: HttpRequest, endpoint: WebhookEndpoint, secret: str) -> None:
        self.message_user(
            request,
            f"Signing secret of {endpoint}: {secret} - copy it now, it is not shown again.",
            messages.WARNING,
        )

    @admin.action(description="Rotate the signing secret (shown once)", permissions=["act"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            secret = notifications.webhook_endpoint_secret_rotate(
                actor=_staff_user(request), endpoint=endpoint
            )
            self._show_secret(request, endpoint, secret)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ActionsNeedChangePermission, admin.ModelAdmin[WebhookDelivery]):
    """The delivery log: read-only; a finished delivery can be sent again."""

    list_display = [
        "id",
        "endpoint",
        "event",
        "status",
        "attempts",
        "response_status",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["status", "event"]
    search_fields = ["endpoint__url", "event"]
    list_select_related = ["endpoint"]
    actions = ["redeliver"]
    fields = readonly_fields = (
        "endpoint",
        "event",
        "status",
        "attempts",
        "response_status",
        "response_body",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "payload",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    @admin.action(description="Deliver again", permissions=["act"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            try:
                notifications.webhook_delivery_redeliver(
                    actor=_staff_user(request), delivery=delivery
                )
            except DomainError as error:
                self.message_user(request, f"{delivery}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{delivery}: queued again.")


# allauth's address admin offers "mark verified" to anyone who may view addresses; a verified
# address is what lets a person request access, so it takes the change permission here too.
admin.site.unregister(EmailAddress)


@admin.register(EmailAddress)
class EmailAddressAdmin(ActionsNeedChangePermission, allauth_admin.EmailAddressAdmin):
    @admin.action(description="Mark selected email addresses as verified", permissions=["act"])
    def make_verified(self, request: HttpRequest, queryset: QuerySet[EmailAddress]) -> None:
        super().make_verified(request, queryset)
