"""Portal pages of the catalog (HTML), at the root. `/models/{org}/{name}` is the page the API's
refusals point to (`release.selectors._access_page`)."""

from django.urls import path

from release import views

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("models/", views.catalog, name="catalog-models"),
    path("models/<str:org>/<str:name>", views.model_page, name="portal-model"),
]
