"""Root URL configuration."""

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from catalogue.api.scs import ConeSearch

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("catalogue.api.urls")),
    path("scs/", ConeSearch.as_view(), name="scs"),
    path("", include("catalogue.tap.urls")),
    # Browsers ask for it on every page that names none (the admin's): no icon, and no 404.
    path("favicon.ico", lambda _request: HttpResponse(status=204)),
    path("", include("webui.urls")),
]
