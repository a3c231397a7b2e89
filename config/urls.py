from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config import health, observability
from licensing.urls import well_known

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", observability.metrics_view, name="metrics"),
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

# Unknown API URLs, requests Django refuses and crashes answer API clients with the JSON error
# body; portal pages keep Django's HTML pages.
handler400 = "config.exceptions.bad_request"
handler404 = "config.exceptions.page_not_found"
handler500 = "config.exceptions.server_error"
