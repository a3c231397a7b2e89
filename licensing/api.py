"""Public key material of the service: what anyone needs to verify what it signs."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView

from licensing.models import SigningKey


class SigningKeyOut(serializers.ModelSerializer[SigningKey]):
    class Meta:
        model = SigningKey
        fields = ["kid", "purpose", "algorithm", "state", "public_pem", "created_at", "retired_at"]


@extend_schema(summary="Public signing keys (model signatures and grants), current and retired")
class SigningKeyListApi(ListAPIView[SigningKey]):
    """Retired keys stay listed: signatures they made remain verifiable."""

    serializer_class = SigningKeyOut
    queryset = SigningKey.objects.order_by("-created_at")
