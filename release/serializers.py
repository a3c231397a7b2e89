"""Output shapes of the catalog API. Read-only: writes go through services, not serializers.

`visible_versions` and `visible_artifacts` are attributes filled by the selectors with only what
the viewer may see; serializers never walk the raw relations.
"""

from rest_framework import serializers

from release.models import Artifact, File, Model, Version


class ArtifactSerializer(serializers.ModelSerializer[Artifact]):
    class Meta:
        model = Artifact
        fields = ["name", "phase", "phase_changed_at"]


class VersionSerializer(serializers.ModelSerializer[Version]):
    artifacts = ArtifactSerializer(source="visible_artifacts", many=True, read_only=True)

    class Meta:
        model = Version
        fields = ["name", "commit", "sealed_at", "created_at", "artifacts"]


class ModelSerializer(serializers.ModelSerializer[Model]):
    id = serializers.CharField(source="repo_id", read_only=True)
    versions = VersionSerializer(source="visible_versions", many=True, read_only=True)

    class Meta:
        model = Model
        fields = ["id", "org", "name", "title", "created_at", "versions"]


class ModelDetailSerializer(ModelSerializer):
    class Meta(ModelSerializer.Meta):
        fields = [*ModelSerializer.Meta.fields, "card"]


class FileSerializer(serializers.ModelSerializer[File]):
    artifact = serializers.CharField(source="artifact.name", read_only=True)
    phase = serializers.CharField(source="artifact.phase", read_only=True)

    class Meta:
        model = File
        fields = ["path", "size", "sha256", "artifact", "phase"]
