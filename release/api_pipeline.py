"""Staff API of the release pipeline: start ingests, schedule and decide unlocks, follow
progress. One view per operation: an input serializer for shape, a service call, an output
serializer. Refusals come from the services as DomainError and map to one error body."""

from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_permissions import staff_with
from config.errors import NotFound
from release import selectors, services
from release.models import Artifact, IngestFile, IngestJob, Model, Phase, Unlock, Version
from release.selectors import unlock_progress


def _staff_user(request: Request) -> User:
    assert isinstance(request.user, User)  # staff_with lets only staff users in
    return request.user


def _get(queryset: QuerySet[Any], what: str, **lookup: Any) -> Any:
    found = queryset.filter(**lookup).first()
    if found is None:
        raise NotFound(f"{what} not found")
    return found


class IngestFileOut(serializers.ModelSerializer[IngestFile]):
    class Meta:
        model = IngestFile
        fields = ["path", "artifact", "state", "size", "sha256", "error"]


class IngestOut(serializers.ModelSerializer[IngestJob]):
    model = serializers.CharField(source="model.repo_id")
    version_commit = serializers.CharField(source="version.commit", default=None, allow_null=True)
    files = IngestFileOut(many=True)

    class Meta:
        model = IngestJob
        fields = [
            "id",
            "model",
            "version_name",
            "sources",
            "state",
            "version_commit",
            "error",
            "created_at",
            "finished_at",
            "files",
        ]


class IngestIn(serializers.Serializer[Any]):
    version = serializers.CharField(max_length=96)
    # May be empty for the serializer: the service refuses that, with its own code.
    artifacts = serializers.DictField(
        child=serializers.CharField(max_length=2048),
        help_text="{artifact name: s3://staging-bucket/prefix/}",
    )


class IngestCreateApi(APIView):
    """Start ingesting a new version of a model from the staging bucket (202; follow it at
    /api/v1/ingests/{id}/)."""

    permission_classes = [staff_with("release.add_ingestjob")]

    @extend_schema(request=IngestIn, responses={202: IngestOut})
    def post(self, request: Request, org: str, name: str) -> Response:
        body = IngestIn(data=request.data)
        body.is_valid(raise_exception=True)
        model = _get(Model.objects.all(), f"model {org}/{name}", org=org, name=name)
        job = services.ingest_start(
            actor=_staff_user(request),
            model=model,
            version_name=body.validated_data["version"],
            sources=body.validated_data["artifacts"],
        )
        return Response(IngestOut(job).data, status=status.HTTP_202_ACCEPTED)


class IngestDetailApi(APIView):
    """An ingest's state and every file's digest or error."""

    permission_classes = [staff_with("release.view_ingestjob")]

    @extend_schema(responses=IngestOut)
    def get(self, request: Request, ingest_id: int) -> Response:
        job = _get(IngestJob.objects.select_related("model", "version"), "ingest", pk=ingest_id)
        return Response(IngestOut(job).data)


class UnlockOut(serializers.ModelSerializer[Unlock]):
    model = serializers.CharField(source="version.model.repo_id")
    version = serializers.CharField(source="version.name")
    artifacts = serializers.SlugRelatedField[Artifact](slug_field="name", many=True, read_only=True)
    approvals = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = Unlock
        fields = [
            "id",
            "model",
            "version",
            "artifacts",
            "target_phase",
            "not_before",
            "state",
            "required_approvals",
            "required_roles",
            "approvals",
            "progress",
            "reason",
            "delayed_since",
            "flipped_at",
            "created_by",
            "created_at",
        ]

    def get_approvals(self, unlock: Unlock) -> list[dict[str, Any]]:
        return [
            {
                "approver": a.approver.username,
                "decision": a.decision,
                "roles": a.roles,
                "comment": a.comment,
                "at": a.created_at,
            }
            for a in unlock.approvals.select_related("approver")
        ]

    def get_progress(self, unlock: Unlock) -> dict[str, int]:
        p = unlock_progress(unlock=unlock)
        return {
            "files_done": p.files_done,
            "files_total": p.files_total,
            "bytes_done": p.bytes_done,
            "bytes_total": p.bytes_total,
        }


class UnlockIn(serializers.Serializer[Any]):
    model = serializers.CharField(help_text="org/name")
    version = serializers.CharField()
    artifacts = serializers.ListField(
        child=serializers.CharField(), allow_empty=False, min_length=1, max_length=1000
    )
    target_phase = serializers.ChoiceField(choices=[Phase.GATED.value, Phase.OPEN.value])
    not_before = serializers.DateTimeField(help_text="ISO 8601 with a time zone")


def _unlocks() -> QuerySet[Unlock]:
    return (
        Unlock.objects.select_related("version__model", "created_by")
        .prefetch_related("artifacts")
        .order_by("-created_at")
    )


class UnlockListApi(ListAPIView[Unlock]):
    """Unlocks, newest first; `?state=` filters."""

    permission_classes = [staff_with("release.view_unlock")]
    serializer_class = UnlockOut

    def get_queryset(self) -> QuerySet[Unlock]:
        state = self.request.query_params.get("state")
        return _unlocks().filter(state=state) if state else _unlocks()


class UnlockScheduleApi(APIView):
    """Schedule artifacts of a sealed version to become gated or open at `not_before`."""

    permission_classes = [staff_with("release.add_unlock")]

    @extend_schema(request=UnlockIn, responses={201: UnlockOut})
    def post(self, request: Request) -> Response:
        body = UnlockIn(data=request.data)
        body.is_valid(raise_exception=True)
        org, _, name = body.validated_data["model"].partition("/")
        version = _get(
            Version.objects.select_related("model"),
            "version",
            model__org=org,
            model__name=name,
            name=body.validated_data["version"],
        )
        unlock = services.unlock_schedule(
            actor=_staff_user(request),
            version=version,
            artifacts=body.validated_data["artifacts"],
            target_phase=body.validated_data["target_phase"],
            not_before=body.validated_data["not_before"],
        )
        return Response(UnlockOut(unlock).data, status=status.HTTP_201_CREATED)


class UnlockDetailApi(APIView):
    """One unlock with its approvals and push progress."""

    permission_classes = [staff_with("release.view_unlock")]

    @extend_schema(responses=UnlockOut)
    def get(self, request: Request, unlock_id: int) -> Response:
        return Response(UnlockOut(_get(_unlocks(), "unlock", pk=unlock_id)).data)


class DecisionIn(serializers.Serializer[Any]):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ReasonIn(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=2000)


class RescheduleIn(serializers.Serializer[Any]):
    not_before = serializers.DateTimeField()


class _UnlockDecisionApi(APIView):
    """POST {input} to /unlocks/{id}/<verb>: validate, call the service, return the unlock."""

    permission_classes = [staff_with("release.change_unlock")]
    input_serializer: type[serializers.Serializer[Any]]

    def act(self, unlock: Unlock, user: User, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def post(self, request: Request, unlock_id: int) -> Response:
        body = self.input_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        self.act(
            _get(_unlocks(), "unlock", pk=unlock_id), _staff_user(request), body.validated_data
        )
        return Response(UnlockOut(_get(_unlocks(), "unlock", pk=unlock_id)).data)


@extend_schema(request=DecisionIn, responses=UnlockOut)
class UnlockApproveApi(_UnlockDecisionApi):
    """Approve an unlock (not your own; with a required role when the policy names some)."""

    input_serializer = DecisionIn

    def act(self, unlock: Unlock, user: User, data: dict[str, Any]) -> None:
        services.unlock_approve(unlock=unlock, approver=user, comment=data["comment"])


@extend_schema(request=ReasonIn, responses=UnlockOut)
class UnlockRejectApi(_UnlockDecisionApi):
    """Reject an unlock with a reason: it is cancelled."""

    input_serializer = ReasonIn

    def act(self, unlock: Unlock, user: User, data: dict[str, Any]) -> None:
        services.unlock_reject(unlock=unlock, approver=user, comment=data["reason"])


@extend_schema(request=ReasonIn, responses=UnlockOut)
class UnlockCancelApi(_UnlockDecisionApi):
    """Cancel a pending unlock with a reason."""

    input_serializer = ReasonIn

    def act(self, unlock: Unlock, user: User, data: dict[str, Any]) -> None:
        services.unlock_cancel(unlock=unlock, actor=user, reason=data["reason"])


@extend_schema(request=RescheduleIn, responses=UnlockOut)
class UnlockRescheduleApi(_UnlockDecisionApi):
    """Move an unlock's due time; its approvals are cleared and must be given again."""

    input_serializer = RescheduleIn

    def act(self, unlock: Unlock, user: User, data: dict[str, Any]) -> None:
        services.unlock_reschedule(unlock=unlock, actor=user, not_before=data["not_before"])


class VersionSignatureApi(APIView):
    """The version's OpenSSF Model Signing bundle (`model_signing verify key`). Without
    `?artifact=`, it covers every file and is served only to those who may see every artifact;
    with it, it covers that artifact's files."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, org: str, name: str, revision: str) -> Response:
        model = selectors.model_get_visible(user=request.user, org=org, name=name)
        version = None
        if model is not None:
            version = selectors.version_get_visible(
                user=request.user, model=model, revision=revision
            )
        if version is None:
            raise NotFound(f"{org}/{name} has no version {revision!r}", code="version_not_found")
        visible = {a.name: a for a in version.visible_artifacts}  # type: ignore[attr-defined]
        wanted = request.query_params.get("artifact")
        if wanted:
            if wanted not in visible:
                raise NotFound(f"no artifact {wanted!r} in {version}", code="artifact_not_found")
            bundle = visible[wanted].signature
        elif len(visible) == version.artifacts.count():
            bundle = version.signature
        else:
            raise NotFound(
                "this version has artifacts you cannot see; ask for one artifact's "
                "signature with ?artifact=NAME",
                code="signature_not_found",
            )
        filename = f"{name}-{version.name}{'-' + wanted if wanted else ''}.sig"
        return Response(
            bundle,
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "X-Signing-Key-Id": version.signing_kid,
            },
        )
