"""The web side of operations: a middleware that gives each request its id and counts it, and
the `/metrics` endpoint for Prometheus."""

import hmac
import ipaddress
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder

from config import metrics, request_id


class RequestObservabilityMiddleware:
    """First in MIDDLEWARE, so that its clock covers the whole stack and every log line written
    while the request is handled carries its id. Per request: one regex match (or a new uuid),
    one counter increment and one histogram observation; no I/O."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        current = request_id.accept_or_new(request.META.get(request_id.META_KEY))
        request_id.set_current(current)
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        metrics.http_request_observe(
            method=request.method or "",
            route=match.route if match is not None else metrics.UNRESOLVED_ROUTE,
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        response[request_id.HEADER] = current
        return response


def _request_done(**kwargs: Any) -> None:
    # Sent when the server closes the response, after Django logged any 4xx/5xx for it: the id
    # stays on until then, and no later line in this thread inherits it.
    request_id.set_current(None)


request_finished.connect(_request_done, dispatch_uid="config.observability.request_done")

# Headers a reverse proxy adds: a request carrying one came through a proxy, so its loopback
# address says nothing about where it came from.
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """With METRICS_TOKEN set: `Authorization: Bearer <METRICS_TOKEN>`, from anywhere. Without
    it: only a scraper on this host talking to us directly (a loopback address, no proxy
    headers), so a proxy on the same host does not publish the metrics by accident."""
    if settings.METRICS_TOKEN:
        presented = request.headers.get("Authorization", "").encode("latin-1", "replace")
        expected = f"Bearer {settings.METRICS_TOKEN}".encode()
        if hmac.compare_digest(presented, expected):
            return None
        response = JsonResponse(
            {"error": {"code": "unauthorized", "message": "send Authorization: Bearer <token>"}},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="weightgate-metrics"'
        return response
    try:
        loopback = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        loopback = False
    if loopback and not any(header in request.META for header in _PROXY_HEADERS):
        return None
    return JsonResponse(
        {
            "error": {
                "code": "forbidden",
                "message": "metrics are served to loopback only unless METRICS_TOKEN is set",
            }
        },
        status=403,
    )


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format (or OpenMetrics, if the scraper asks for it)."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(metrics.scrape_registry(settings.PROMETHEUS_MULTIPROC_DIR))
    return HttpResponse(body, content_type=content_type)
