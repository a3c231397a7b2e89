"""Requests refused before any view reads them: a body over DATA_UPLOAD_MAX_MEMORY_SIZE, and a
NUL character in the path or the query string.

- Django enforces the body limit only where it parses forms itself (`request.POST`,
  `request.body`); DRF's JSON parser reads the request stream and would take a body of any size
  into memory. No endpoint takes file uploads, so one limit for every body is right.
- PostgreSQL text cannot hold NUL: a lookup with one fails inside the database driver (a 500),
  and no name, path, revision or filter of this service can contain one. Form and JSON string
  fields already refuse it (Django's and DRF's ProhibitNullCharactersValidator).
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config.exceptions import error_response, is_api_request


def _refuse(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    if is_api_request(request):
        return error_response(status, code, message)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class RequestLimitsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # what Django itself makes of a malformed length: no body is read
        if limit is not None and length > limit:
            return _refuse(
                request,
                413,
                "request_too_large",
                f"The request body ({length} bytes) is larger than the {limit} bytes this "
                "server accepts.",
            )
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "\x00" in query or "%00" in query:
            return _refuse(request, 400, "nul_character", "The URL contains a NUL character (%00).")
        return self.get_response(request)
