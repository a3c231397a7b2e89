from django.urls import path

from licensing import api

# Under /api/v1/.
urlpatterns = [
    path("signing-keys/", api.SigningKeyListApi.as_view(), name="signing-key-list"),
    path("models/<str:org>/<str:name>/gate", api.ModelGateApi.as_view(), name="model-gate"),
    path(
        "models/<str:org>/<str:name>/access-requests/",
        api.AccessRequestCreateApi.as_view(),
        name="access-request-create",
    ),
    path(
        "models/<str:org>/<str:name>/access-requests/review",
        api.ReviewListApi.as_view(),
        name="access-request-review",
    ),
    path(
        "models/<str:org>/<str:name>/access-requests/handle",
        api.ReviewHandleApi.as_view(),
        name="access-request-handle",
    ),
    path(
        "models/<str:org>/<str:name>/access-requests/grant",
        api.ReviewGrantApi.as_view(),
        name="access-request-grant",
    ),
    path("me/access-requests/", api.MyAccessRequestListApi.as_view(), name="my-access-requests"),
    path(
        "me/access-requests/<int:request_id>/withdraw",
        api.MyAccessRequestWithdrawApi.as_view(),
        name="my-access-request-withdraw",
    ),
    path("me/grants/", api.MyGrantListApi.as_view(), name="my-grants"),
    path(
        "me/grants/<uuid:grant_id>.jwt", api.MyGrantDownloadApi.as_view(), name="my-grant-download"
    ),
    path("me/tokens/", api.MyTokenListCreateApi.as_view(), name="my-tokens"),
    path("me/tokens/<int:token_id>/revoke", api.MyTokenRevokeApi.as_view(), name="my-token-revoke"),
    path("grants/<uuid:grant_id>/revoke", api.GrantRevokeApi.as_view(), name="grant-revoke"),
]

well_known = [
    path("jwks.json", api.JwksApi.as_view(), name="jwks"),
    path("weightgate-revocations.jwt", api.RevocationListApi.as_view(), name="revocations"),
]
