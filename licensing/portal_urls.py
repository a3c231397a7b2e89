"""Portal pages of the access flow (HTML): requests, status, tokens, everything of yours."""

from django.urls import path

from licensing import views

urlpatterns = [
    path("models/<str:org>/<str:name>/access", views.access_status, name="portal-access-status"),
    path(
        "models/<str:org>/<str:name>/access/request",
        views.access_request,
        name="portal-access-request",
    ),
    path(
        "models/<str:org>/<str:name>/access/withdraw",
        views.access_withdraw,
        name="portal-access-withdraw",
    ),
    path("tokens/", views.tokens_page, name="portal-tokens"),
    path("tokens/<int:token_id>/revoke", views.token_revoke, name="portal-token-revoke"),
    path("me/access/", views.my_access, name="portal-my-access"),
]
