"""The download API: authorise with `file_download_decision`, throttle, then redirect to the
object store. Shared by the REST endpoint and the Hub-compatible `resolve` endpoint."""

from collections.abc import Iterable
from dataclasses import dataclass

from csp.decorators import csp_exempt
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config import metrics
from licensing.authentication import request_token
from licensing.models import DownloadToken, Grant
from release import selectors
from release.distribution import download_event, download_throttle, download_url
from release.models import File, Version


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after: int = 0


@dataclass(frozen=True)
class Found:
    version: Version | None
    file: File | None
    refusal: Refusal | None


def file_lookup(request: Request, org: str, name: str, revision: str, path: str) -> Found:
    """The file a request names and whether the caller may have it.

    The common case takes one query for the file (by version name or commit) and the decision,
    and most requests none: the token, file, grant and location reads are remembered per process
    (`licensing.read_cache`: a change anywhere is seen within a second), and the throttle
    mostly none either (units drawn from Redis in advance; a GET's log entry is one round trip).
    Anything the decision hides as 404, and anything not found, goes the slow way through the
    visibility selectors, so the answer says model, version or file not found without revealing
    what the caller may not see."""
    file = selectors.file_by_revision(org=org, name=name, revision=revision, path=path)
    token = request_token(request)
    if file is not None:
        decision = selectors.file_download_decision(user=request.user, token=token, file=file)
        if decision.allowed or decision.status != 404:
            version = file.artifact.version
            if not decision.allowed:
                return Found(
                    version, None, Refusal(decision.status, decision.code, decision.message)
                )
            return _throttled(request, version, file, token, decision.grant)
    return _not_found(request, org, name, revision, path)


def _not_found(request: Request, org: str, name: str, revision: str, path: str) -> Found:
    model = selectors.model_get_visible(user=request.user, org=org, name=name)
    if model is None:
        return Found(None, None, Refusal(404, "model_not_found", f"model {org}/{name} not found"))
    version = selectors.version_get_visible(user=request.user, model=model, revision=revision)
    if version is None:
        return Found(
            None,
            None,
            Refusal(404, "version_not_found", f"{org}/{name} has no version {revision!r}"),
        )
    return Found(
        version,
        None,
        Refusal(404, "file_not_found", f"{org}/{name}@{version.name} has no file {path!r}"),
    )


def _throttled(
    request: Request, version: Version, file: File, token: DownloadToken | None, grant: Grant | None
) -> Found:
    grant_id = str(grant.jti) if grant else None
    # A HEAD only looks: not a download. A GET is logged by the throttle when it lets it through.
    record = (
        download_event(
            file=file,
            user_id=request.user.pk,
            token_id=token.pk if token else None,
            grant_id=grant_id,
        )
        if request.method == "GET"
        else None
    )
    throttle = download_throttle(
        token_key=token.token_hash[:16] if token else None, grant_id=grant_id, record=record
    )
    if throttle.unavailable:
        return Found(
            version, file, Refusal(503, "unavailable", throttle.message, throttle.retry_after)
        )
    if not throttle.allowed:
        return Found(
            version, file, Refusal(429, "rate_limited", throttle.message, throttle.retry_after)
        )
    return Found(version, file, None)


def refusal_response(refusal: Refusal) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": refusal.code, "message": refusal.message}}, status=refusal.status
    )
    if refusal.retry_after:
        response["Retry-After"] = str(refusal.retry_after)
    if refusal.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="weightgate"'
    return response


class JsonOnly(BaseContentNegotiation):
    """Download answers are redirects or JSON whatever the client accepts: parsing its Accept
    header (a tenth of the view's CPU, on the busiest path) could only pick JSON anyway."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


@method_decorator(csp_exempt(), name="dispatch")  # redirects and JSON: no document to protect
class CountedDownloadView(APIView):
    """A download endpoint whose refusals are counted by reason, those raised before the view
    runs included (DRF authenticates first: an expired or revoked token)."""

    surface = ""  # the `surface` label: api or hub
    content_negotiation_class = JsonOnly

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        codes = exc.get_codes() if isinstance(exc, APIException) else None
        metrics.download_refused(
            surface=self.surface,
            reason=codes if isinstance(codes, str) else "error",
            status=response.status_code,
        )
        return response

    def refused(self, refusal: Refusal) -> None:
        metrics.download_refused(surface=self.surface, reason=refusal.code, status=refusal.status)

    def issued(self, request: Request, file: File) -> None:
        # A HEAD only looks, as in the download log: it is no download.
        if request.method == "GET":
            metrics.download_issued(surface=self.surface, phase=file.artifact.phase)


class FileDownloadApi(CountedDownloadView):
    """Download one file: 302 to a presigned URL on the object store (Range requests work
    there), or with `Prefer: no-redirect` a JSON body with the URL, size and sha256."""

    surface = "api"

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Prefer",
                str,
                OpenApiParameter.HEADER,
                description="no-redirect: answer JSON instead of 302",
            )
        ],
        responses={
            302: OpenApiResponse(description="to the file's URL"),
            200: OpenApiResponse(description="{url, size, sha256} with no-redirect"),
        },
    )
    def get(self, request: Request, org: str, name: str, revision: str, path: str) -> HttpResponse:
        found = file_lookup(request, org, name, revision, path)
        if found.refusal is not None:
            self.refused(found.refusal)
            return refusal_response(found.refusal)
        assert found.file is not None
        url = download_url(found.file)
        self.issued(request, found.file)
        if "no-redirect" in request.headers.get("Prefer", ""):
            return JsonResponse({"url": url, "size": found.file.size, "sha256": found.file.sha256})
        response = HttpResponseRedirect(url)
        response["X-Content-SHA256"] = found.file.sha256
        response["X-Linked-Size"] = str(found.file.size)
        return response
