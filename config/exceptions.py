"""One error body for the whole API: {"error": {"code": ..., "message": ..., "detail": ...}}."""

import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from config import outages
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


# --- Django's own error views: the same body for API paths --------------------------------------
# Errors raised before or outside DRF (an unknown URL, a malformed request Django refuses, a
# crash) would otherwise answer API clients with an HTML page.

API_PREFIXES = ("/api/", "/.well-known/")


def is_api_request(request: HttpRequest) -> bool:
    """An API path, or a request that reached a DRF view (the Hub's `resolve` sits at the root)."""
    if request.path.startswith(API_PREFIXES):
        return True
    view = getattr(request.resolver_match, "func", None)
    view_class = getattr(view, "view_class", None)
    return isinstance(view_class, type) and issubclass(view_class, APIView)


def error_response(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return error_response(400, "bad_request", "The request is not valid.")
    return defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return error_response(404, "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while the exception is being handled. An outage (database, Redis) is not
    # a crash: 503 with Retry-After, so clients and load balancers wait and try again.
    if outages.database_unavailable(sys.exc_info()[1]):
        return outages.unavailable_response(api=is_api_request(request))
    if outages.redis_unavailable(sys.exc_info()[1]):
        return outages.unavailable_response(api=is_api_request(request), service="cache")
    if is_api_request(request):
        return error_response(500, "server_error", "Internal error; it has been logged.")
    return defaults.server_error(request)
