from django.urls import path

from release import api

# Hub-style names allow dots, so no DRF format suffixes here.
urlpatterns = [
    path("models/", api.ModelListApi.as_view(), name="model-list"),
    path("models/<str:org>/<str:name>/", api.ModelDetailApi.as_view(), name="model-detail"),
    path(
        "models/<str:org>/<str:name>/versions/", api.VersionListApi.as_view(), name="version-list"
    ),
    path(
        "models/<str:org>/<str:name>/versions/<str:revision>/",
        api.VersionDetailApi.as_view(),
        name="version-detail",
    ),
    path(
        "models/<str:org>/<str:name>/versions/<str:revision>/files/",
        api.FileListApi.as_view(),
        name="file-list",
    ),
]
