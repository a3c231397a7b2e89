"""The OpenAPI schema documents the errors as well as the successes: every operation lists the
error statuses it can answer, each with the one error body of `config.exceptions`, so clients
(and the schema fuzzing in tests/test_api_fuzz.py) know every answer they may get."""

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import permissions, serializers

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class ErrorDetail(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable, machine-readable, e.g. `model_not_found`.")
    message = serializers.CharField(help_text="For people: what is wrong and what to do.")
    detail = serializers.JSONField(
        required=False, help_text="Per-field problems, when the request had several."
    )


class Error(serializers.Serializer[Any]):
    error = ErrorDetail()


ERRORS = {
    "400": "The request is not valid (the detail names each field).",
    "401": "No valid credentials: a missing, unknown, revoked or expired token.",
    "403": "Not allowed for these credentials (or a write with a read-only token).",
    "404": "Not found, or not visible to these credentials.",
    "409": "Not allowed from the current state.",
    "413": "The request body is larger than the server accepts.",
    "415": "The body is not JSON (or another accepted type).",
    "429": "Too many requests; retry after Retry-After seconds.",
}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers each operation can give."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses: dict[str, Any] = operation["responses"]
        for code in self._error_codes(operation):
            responses.setdefault(code, self._error_response(code))
        return operation

    def _error_codes(self, operation: dict[str, Any]) -> list[str]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation or self.method in _UNSAFE
        codes = []
        if has_body or any(p["in"] == "query" for p in parameters):
            codes.append("400")  # pagination is checked too (config.pagination)
        if self.view.get_authenticators():
            codes.append("401")  # a bad token is refused wherever tokens are read
            public = all(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())
            if not public or self.method in _UNSAFE:
                codes.append("403")
        if has_body or any(p["in"] == "path" for p in parameters):
            codes.append("404")  # what the path or the body names may not exist
        if self.method in _UNSAFE:
            codes += ["409", "413", "415"]
        return codes

    def _error_response(self, code: str) -> dict[str, Any]:
        component = self.resolve_serializer(Error, "response")
        return {
            "description": ERRORS[code],
            "content": {"application/json": {"schema": component.ref}},
        }
