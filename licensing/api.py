"""API of the licensing app: public key material and revocations (verify offline), access
requests and grants for developers, and the review API for staff, like the Hub's."""

import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_permissions import staff_with
from config.errors import DomainError, NotFound
from licensing import access, tokens
from licensing.models import (
    AccessRequest,
    DownloadToken,
    GatePolicy,
    Grant,
    License,
    SigningKey,
)
from licensing.publishing import jwks_current, revocation_list_current
from licensing.selectors import access_requests_for_review


class SigningKeyOut(serializers.ModelSerializer[SigningKey]):
    class Meta:
        model = SigningKey
        fields = ["kid", "purpose", "algorithm", "state", "public_pem", "created_at", "retired_at"]


@extend_schema(summary="Public signing keys (model signatures and grants), current and retired")
class SigningKeyListApi(ListAPIView[SigningKey]):
    """Retired keys stay listed: signatures they made remain verifiable."""

    serializer_class = SigningKeyOut
    queryset = SigningKey.objects.order_by("-created_at")


# --- Public documents: verify grants offline -----------------------------------------------------


@extend_schema(
    summary="JSON Web Key Set that verifies license grants and revocation lists",
    responses={200: dict},
)
class JwksApi(APIView):
    authentication_classes: list[type] = []

    def get(self, request: Request) -> Response:
        return Response(jwks_current(), headers={"Cache-Control": "public, max-age=300"})


@extend_schema(
    summary="Signed list of revoked grant ids (compact JWS, short expiry)",
    responses={(200, "application/jwt"): str},
)
class RevocationListApi(APIView):
    authentication_classes: list[type] = []

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(
            revocation_list_current(),
            content_type="application/jwt",
            headers={"Cache-Control": "public, max-age=30"},
        )


# --- Developers: licenses, requests, grants ------------------------------------------------------


def _visible_model(request: Request, org: str, name: str) -> Any:
    from release.selectors import model_get_visible  # release builds on licensing, not back

    model = model_get_visible(user=request.user, org=org, name=name)
    if model is None:
        raise NotFound(f"model {org}/{name} not found", code="model_not_found")
    return model


class LicenseOut(serializers.ModelSerializer[License]):
    id = serializers.CharField(source="slug")

    class Meta:
        model = License
        fields = [
            "id",
            "version",
            "title",
            "text",
            "text_sha256",
            "commercial_use",
            "mau_cap",
            "attribution_required",
            "acceptable_use_url",
            "published_at",
        ]


class GateOut(serializers.Serializer[Any]):
    approval_mode = serializers.CharField()
    license = LicenseOut(allow_null=True)
    form_fields = serializers.ListField(child=serializers.DictField())


class ModelGateApi(APIView):
    """What a developer must accept and answer to request access to a model."""

    @extend_schema(responses=GateOut)
    def get(self, request: Request, org: str, name: str) -> Response:
        model = _visible_model(request, org, name)
        policy = GatePolicy.objects.select_related("license").filter(model=model).first()
        if policy is None or policy.license is None:
            raise NotFound(f"{org}/{name} does not take access requests", code="not_gated")
        return Response(GateOut(policy).data)


class AccessRequestOut(serializers.ModelSerializer[AccessRequest]):
    model = serializers.CharField(source="model.repo_id")
    license = serializers.CharField(source="license.slug", default=None)
    license_version = serializers.CharField(source="license.version", default=None)
    grant = serializers.SerializerMethodField()

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "model",
            "status",
            "reason",
            "may_reapply",
            "license",
            "license_version",
            "license_sha256",
            "answers",
            "created_at",
            "decided_at",
            "grant",
        ]

    def get_grant(self, request: AccessRequest) -> str | None:
        live = next((g for g in request.grants.all() if g.revoked_at is None), None)
        return str(live.jti) if live else None


class AccessRequestIn(serializers.Serializer[Any]):
    license_sha256 = serializers.RegexField(
        r"^[0-9a-f]{64}$", help_text="sha256 of the license text you accept (from .../gate)"
    )
    answers = serializers.DictField(required=False, default=dict)


def _me(request: Request) -> User:
    assert isinstance(request.user, User)  # IsAuthenticated let only signed-in users in
    return request.user


def _client_ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR")


class AccessRequestCreateApi(APIView):
    """Accept the model's current license and answer its form. 201 with the request: approved
    at once in auto mode, pending review otherwise."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=AccessRequestIn, responses={201: AccessRequestOut})
    def post(self, request: Request, org: str, name: str) -> Response:
        body = AccessRequestIn(data=request.data)
        body.is_valid(raise_exception=True)
        model = _visible_model(request, org, name)
        accepted = License.objects.filter(
            text_sha256=body.validated_data["license_sha256"], published_at__isnull=False
        )
        # Licenses may share a text (another slug, a new version changing only flags): if the
        # model's current license has this text, that is the one accepted.
        license = accepted.filter(gatepolicy__model=model).first() or accepted.first()
        if license is None:
            raise NotFound("no published license has that text hash", code="license_not_found")
        assert isinstance(request.user, User)
        created = access.access_request_submit(
            user=request.user,
            model=model,
            license=license,
            answers=body.validated_data["answers"],
            ip=_client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        return Response(AccessRequestOut(created).data, status=status.HTTP_201_CREATED)


class MyAccessRequestListApi(ListAPIView[AccessRequest]):
    """Your access requests, newest first, with decisions and reasons."""

    permission_classes = [IsAuthenticated]
    serializer_class = AccessRequestOut

    def get_queryset(self) -> QuerySet[AccessRequest]:
        return (
            AccessRequest.objects.filter(user=_me(self.request))
            .select_related("model", "license")
            .prefetch_related("grants")
            .order_by("-created_at")
        )


class MyAccessRequestWithdrawApi(APIView):
    """Take back one of your pending requests."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=AccessRequestOut)
    def post(self, request: Request, request_id: int) -> Response:
        found = AccessRequest.objects.filter(pk=request_id, user=_me(request)).first()
        if found is None:
            raise NotFound("no such request of yours", code="not_found")
        assert isinstance(request.user, User)
        return Response(
            AccessRequestOut(access.access_request_withdraw(request=found, user=_me(request))).data
        )


class GrantOut(serializers.ModelSerializer[Grant]):
    id = serializers.CharField(source="jti")
    model = serializers.CharField(source="model.repo_id")
    license = serializers.CharField(source="license.slug")
    license_version = serializers.CharField(source="license.version")

    class Meta:
        model = Grant
        fields = [
            "id",
            "model",
            "artifacts",
            "license",
            "license_version",
            "license_sha256",
            "kid",
            "issued_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "suspended_at",
            "token",
        ]


class MyGrantListApi(ListAPIView[Grant]):
    """Your signed license grants (the `token` is the JWS)."""

    permission_classes = [IsAuthenticated]
    serializer_class = GrantOut

    def get_queryset(self) -> QuerySet[Grant]:
        return (
            Grant.objects.filter(user=_me(self.request))
            .select_related("model", "license")
            .order_by("-issued_at")
        )


class MyGrantDownloadApi(APIView):
    """One of your grants as a file: the compact JWS, `application/jwt`."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, "application/jwt"): str})
    def get(self, request: Request, grant_id: uuid.UUID) -> HttpResponse:
        grant = Grant.objects.filter(jti=grant_id, user=_me(request)).first()
        if grant is None:
            raise NotFound("no such grant of yours", code="not_found")
        return HttpResponse(
            grant.token,
            content_type="application/jwt",
            headers={"Content-Disposition": f'attachment; filename="grant-{grant.jti}.jwt"'},
        )


# --- Reviewers (staff) ----------------------------------------------------------------------------


class ReviewListApi(ListAPIView[AccessRequest]):
    """Access requests of a model by status (`pending`, `approved`, `rejected`), oldest first."""

    permission_classes = [staff_with("licensing.view_accessrequest")]
    serializer_class = AccessRequestOut

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status", str, enum=[s.value for s in AccessRequest.Status], default="pending"
            )
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[AccessRequest]:
        model = _visible_model(self.request, self.kwargs["org"], self.kwargs["name"])
        wanted = self.request.query_params.get("status", "pending")
        if wanted not in AccessRequest.Status.values:
            raise DomainError(f"status must be one of {', '.join(AccessRequest.Status.values)}")
        return access_requests_for_review(model_id=model.pk, status=wanted).prefetch_related(
            "grants"
        )


class HandleIn(serializers.Serializer[Any]):
    # At most 1,000 ids a call: each is its own signed decision (~7 ms), and a request must end
    # well inside a proxy's timeout. Send bigger reviews in batches.
    ids = serializers.ListField(
        child=serializers.IntegerField(), allow_empty=False, min_length=1, max_length=1000
    )
    status = serializers.ChoiceField(
        choices=["approved", "rejected", "pending"], help_text="pending cancels an approval"
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    may_reapply = serializers.BooleanField(required=False, default=False)


class HandleOut(serializers.Serializer[Any]):
    handled = serializers.ListField(child=serializers.IntegerField())
    refused = serializers.DictField(child=serializers.CharField())


class ReviewHandleApi(APIView):
    """Approve, reject or cancel (back to pending) requests of a model, in bulk. Each request is
    decided on its own; the answer lists what was handled and why anything was refused."""

    permission_classes = [staff_with("licensing.change_accessrequest")]

    @extend_schema(request=HandleIn, responses=HandleOut)
    def post(self, request: Request, org: str, name: str) -> Response:
        body = HandleIn(data=request.data)
        body.is_valid(raise_exception=True)
        model = _visible_model(request, org, name)
        assert isinstance(request.user, User)
        handled, refused = access.access_requests_handle(
            model=model,
            ids=body.validated_data["ids"],
            status=body.validated_data["status"],
            reviewer=request.user,
            reason=body.validated_data["reason"],
            may_reapply=body.validated_data["may_reapply"],
        )
        return Response({"handled": handled, "refused": {str(k): v for k, v in refused.items()}})


class GrantDirectIn(serializers.Serializer[Any]):
    user = serializers.CharField(help_text="username")


class ReviewGrantApi(APIView):
    """Give access to someone who never asked."""

    permission_classes = [staff_with("licensing.add_grant")]

    @extend_schema(request=GrantDirectIn, responses={201: AccessRequestOut})
    def post(self, request: Request, org: str, name: str) -> Response:
        body = GrantDirectIn(data=request.data)
        body.is_valid(raise_exception=True)
        model = _visible_model(request, org, name)
        user = User.objects.filter(username=body.validated_data["user"], is_active=True).first()
        if user is None:
            raise NotFound(f"no active user {body.validated_data['user']!r}", code="user_not_found")
        assert isinstance(request.user, User)
        granted = access.access_grant_direct(model=model, user=user, reviewer=request.user)
        return Response(AccessRequestOut(granted).data, status=status.HTTP_201_CREATED)


class RevokeIn(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=500)


class GrantRevokeApi(APIView):
    """Revoke a grant with a reason; it stops working for downloads at once."""

    permission_classes = [staff_with("licensing.change_grant")]

    @extend_schema(request=RevokeIn, responses=GrantOut)
    def post(self, request: Request, grant_id: uuid.UUID) -> Response:
        body = RevokeIn(data=request.data)
        body.is_valid(raise_exception=True)
        grant = Grant.objects.select_related("model", "license").filter(jti=grant_id).first()
        if grant is None:
            raise NotFound("no such grant", code="not_found")
        assert isinstance(request.user, User)
        revoked = access.grant_revoke(
            grant=grant, actor=request.user, reason=body.validated_data["reason"]
        )
        return Response(
            GrantOut(Grant.objects.select_related("model", "license").get(pk=revoked.pk)).data
        )


# --- Download tokens -----------------------------------------------------------------------------


class TokenOut(serializers.ModelSerializer[DownloadToken]):
    models = serializers.ListField(source="model_ids", child=serializers.CharField())

    class Meta:
        model = DownloadToken
        fields = [
            "id",
            "name",
            "hint",
            "scope",
            "models",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
        ]


class TokenCreatedOut(TokenOut):
    token = serializers.CharField(help_text="Shown this once; store it now.")

    class Meta(TokenOut.Meta):
        fields = [*TokenOut.Meta.fields, "token"]


class TokenIn(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=list,
        max_length=1000,
        help_text="org/name ids; empty: every model",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class MyTokenListCreateApi(ListAPIView[DownloadToken]):
    """Your download tokens (GET), or a new one (POST; its value is shown once)."""

    permission_classes = [IsAuthenticated]
    serializer_class = TokenOut

    def get_queryset(self) -> QuerySet[DownloadToken]:
        return DownloadToken.objects.filter(user=_me(self.request)).order_by("-created_at")

    @extend_schema(request=TokenIn, responses={201: TokenCreatedOut})
    def post(self, request: Request) -> Response:
        body = TokenIn(data=request.data)
        body.is_valid(raise_exception=True)
        token, clear = tokens.token_create(
            user=_me(request),
            name=body.validated_data["name"],
            models=body.validated_data["models"],
            expires_at=body.validated_data["expires_at"],
        )
        data = TokenOut(token).data
        data["token"] = clear
        return Response(data, status=status.HTTP_201_CREATED)


class MyTokenRevokeApi(APIView):
    """Revoke one of your tokens; it stops working on the next request."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=TokenOut)
    def post(self, request: Request, token_id: int) -> Response:
        token = DownloadToken.objects.filter(pk=token_id, user=_me(request)).first()
        if token is None:
            raise NotFound("no such token of yours", code="not_found")
        return Response(TokenOut(tokens.token_revoke(token=token, user=_me(request))).data)
