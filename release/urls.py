from django.urls import path

from release import api, api_download, api_pipeline

# Hub-style names allow dots, so no DRF format suffixes here.
urlpatterns = [
    path("models/", api.ModelListApi.as_view(), name="model-list"),
    path("models/<str:org>/<str:name>/", api.ModelDetailApi.as_view(), name="model-detail"),
    path(
        "models/<str:org>/<str:name>/downloads/",
        api.ModelDownloadsApi.as_view(),
        name="model-downloads",
    ),
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
    path(
        "models/<str:org>/<str:name>/versions/<str:revision>/signature",
        api_pipeline.VersionSignatureApi.as_view(),
        name="version-signature",
    ),
    path(
        "models/<str:org>/<str:name>/ingests/",
        api_pipeline.IngestCreateApi.as_view(),
        name="ingest-create",
    ),
    path("ingests/<int:ingest_id>/", api_pipeline.IngestDetailApi.as_view(), name="ingest-detail"),
    path("unlocks/", api_pipeline.UnlockListApi.as_view(), name="unlock-list"),
    path("unlocks/schedule", api_pipeline.UnlockScheduleApi.as_view(), name="unlock-schedule"),
    path("unlocks/<int:unlock_id>/", api_pipeline.UnlockDetailApi.as_view(), name="unlock-detail"),
    path(
        "unlocks/<int:unlock_id>/approve",
        api_pipeline.UnlockApproveApi.as_view(),
        name="unlock-approve",
    ),
    path(
        "unlocks/<int:unlock_id>/reject",
        api_pipeline.UnlockRejectApi.as_view(),
        name="unlock-reject",
    ),
    path(
        "unlocks/<int:unlock_id>/cancel",
        api_pipeline.UnlockCancelApi.as_view(),
        name="unlock-cancel",
    ),
    path(
        "unlocks/<int:unlock_id>/reschedule",
        api_pipeline.UnlockRescheduleApi.as_view(),
        name="unlock-reschedule",
    ),
    path(
        "models/<str:org>/<str:name>/versions/<str:revision>/files/<path:path>",
        api_download.FileDownloadApi.as_view(),
        name="file-download",
    ),
]
