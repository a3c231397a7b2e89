"""One error body for the whole API: {"error": {"code": ..., "message": ..., "detail": ...}}."""

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.errors import DomainError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.detail:
            error["detail"] = exc.detail
        return Response({"error": error}, status=exc.status)
    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's 500 handling and logging take it
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid"
        message = exc.detail if isinstance(exc.detail, str) else "The request is not valid."
        body: dict[str, Any] = {"code": code, "message": str(message)}
        if not isinstance(exc.detail, str):
            body["detail"] = exc.detail
        response.data = {"error": body}
    if response.status_code == status.HTTP_404_NOT_FOUND:
        response.data = {"error": {"code": "not_found", "message": "Not found."}}
    return response
