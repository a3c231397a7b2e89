"""Read API of the release catalog. Every view asks `release.selectors` what the caller may see;
anything invisible answers 404, exactly like something that does not exist."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.request import Request

from config.errors import DomainError, NotFound
from release import selectors
from release.models import DownloadDaily, File, Model, Phase, Version
from release.serializers import (
    FileSerializer,
    ModelDetailSerializer,
    ModelSerializer,
    VersionSerializer,
)


def _model_or_404(request: Request, org: str, name: str, with_versions: bool = False) -> Model:
    model = selectors.model_get_visible(
        user=request.user, org=org, name=name, with_versions=with_versions
    )
    if model is None:
        raise NotFound(f"model {org}/{name} not found", code="model_not_found")
    return model


def _version_or_404(request: Request, org: str, name: str, revision: str) -> Version:
    model = _model_or_404(request, org, name)
    version = selectors.version_get_visible(user=request.user, model=model, revision=revision)
    if version is None:
        raise NotFound(f"{org}/{name} has no version {revision!r}", code="version_not_found")
    return version


@extend_schema(
    parameters=[
        OpenApiParameter("org", str, description="Only models of this organisation."),
        OpenApiParameter(
            "phase",
            str,
            enum=Phase.values,
            description="Only models with a visible artifact in this phase.",
        ),
    ]
)
class ModelListApi(ListAPIView[Model]):
    """Models the caller may see, with their versions and each artifact's phase."""

    serializer_class = ModelSerializer

    def get_queryset(self) -> QuerySet[Model]:
        models = selectors.models_visible_to(user=self.request.user).order_by("org", "name")
        org = self.request.query_params.get("org")
        if org:
            models = models.filter(org=org)
        phase = self.request.query_params.get("phase")
        if phase and phase not in Phase.values:
            # A typo must not read as "no model is in that phase".
            raise DomainError(
                f"phase must be one of {', '.join(Phase.values)}", code="invalid_phase"
            )
        if phase:
            visible = selectors.artifacts_visible_to(user=self.request.user).filter(phase=phase)
            models = models.filter(pk__in=visible.values("version__model_id"))
        return models


class ModelDetailApi(RetrieveAPIView[Model]):
    """One model with its card, versions and the phase of each artifact."""

    serializer_class = ModelDetailSerializer

    def get_object(self) -> Model:
        return _model_or_404(
            self.request, self.kwargs["org"], self.kwargs["name"], with_versions=True
        )


class VersionListApi(ListAPIView[Version]):
    """The model's versions the caller may see, newest first."""

    serializer_class = VersionSerializer

    def get_queryset(self) -> QuerySet[Version]:
        model = _model_or_404(self.request, self.kwargs["org"], self.kwargs["name"])
        return selectors.versions_visible_to(user=self.request.user, model=model).order_by(
            "-created_at"
        )


class VersionDetailApi(RetrieveAPIView[Version]):
    """One version, by name or 40-hex commit id."""

    serializer_class = VersionSerializer

    def get_object(self) -> Version:
        return _version_or_404(
            self.request, self.kwargs["org"], self.kwargs["name"], self.kwargs["revision"]
        )


class FileListApi(ListAPIView[File]):
    """Files of a version that belong to artifacts the caller may see, by path."""

    serializer_class = FileSerializer

    def get_queryset(self) -> QuerySet[File]:
        version = _version_or_404(
            self.request, self.kwargs["org"], self.kwargs["name"], self.kwargs["revision"]
        )
        return selectors.files_visible_to(user=self.request.user, version=version).order_by("path")


class DownloadCountOut(serializers.Serializer[Any]):
    version = serializers.CharField()
    day = serializers.DateField()
    count = serializers.IntegerField()


class ModelDownloadsApi(ListAPIView[DownloadDaily]):
    """Downloads of a model per version and UTC day, newest first (`?version=` filters)."""

    serializer_class = DownloadCountOut

    def get_queryset(self) -> QuerySet[DownloadDaily]:
        model = _model_or_404(self.request, self.kwargs["org"], self.kwargs["name"])
        visible = selectors.versions_visible_to(user=self.request.user, model=model).values("name")
        days = DownloadDaily.objects.filter(model=model, version__in=visible).order_by(
            "-day", "version"
        )
        version = self.request.query_params.get("version")
        return days.filter(version=version) if version else days
