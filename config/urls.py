from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from licensing.urls import well_known


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. Deliberately touches nothing else (it is also the benchmark's bare
    Django baseline)."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("release.urls")),
    path("api/v1/", include("licensing.urls")),
    path(".well-known/", include(well_known)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file: the Content-Security-Policy refuses inline ones.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # The developer portal (HTML) and its accounts.
    path("accounts/", include("allauth.urls")),
    path("", include("release.portal_urls")),
    path("", include("licensing.portal_urls")),
    # Last: `{org}/{name}/resolve/...` sits at the root, like on huggingface.co.
    path("", include("release.hub_urls")),
]
