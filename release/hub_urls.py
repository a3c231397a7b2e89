"""Routes of the Hub-compatible API, at the root like huggingface.co's own."""

from django.urls import path

from release import hub

urlpatterns = [
    path("api/whoami-v2", hub.HubWhoAmIApi.as_view(), name="hub-whoami"),
    path("api/models/<str:org>/<str:name>", hub.HubModelInfoApi.as_view(), name="hub-model"),
    path(
        "api/models/<str:org>/<str:name>/revision/<str:revision>",
        hub.HubModelInfoApi.as_view(),
        name="hub-model-revision",
    ),
    path(
        "api/models/<str:org>/<str:name>/tree/<str:revision>",
        hub.HubTreeApi.as_view(),
        name="hub-tree",
    ),
    path(
        "api/models/<str:org>/<str:name>/tree/<str:revision>/<path:path>",
        hub.HubTreeApi.as_view(),
        name="hub-tree-path",
    ),
    path(
        "<str:org>/<str:name>/resolve/<str:revision>/<path:path>",
        hub.HubResolveApi.as_view(),
        name="hub-resolve",
    ),
]
