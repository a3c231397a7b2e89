"""Limit/offset pagination that refuses what it cannot read. DRF's own quietly replaces a
malformed `limit` or `offset` with the default, so a typo silently returns another page."""

from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

from config.errors import DomainError

MAX_LIMIT = 1000
# PostgreSQL's OFFSET is a bigint; far below it, a larger offset cannot name a real row anyway.
MAX_OFFSET = 1_000_000_000


def _bounded(request: Request, name: str, *, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise DomainError(
            f"{name} must be an integer from {minimum} to {maximum}", code="invalid_pagination"
        )
    return value


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int | None:
        limit = _bounded(request, self.limit_query_param, minimum=1, maximum=MAX_LIMIT)
        return self.default_limit if limit is None else limit

    def get_offset(self, request: Request) -> int:
        offset = _bounded(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET)
        return offset or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": MAX_LIMIT},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters
