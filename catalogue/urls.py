"""Root URL configuration."""

from django.contrib import admin
from django.urls import include, path

from catalogue.api.scs import cone_search

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("catalogue.api.urls")),
    path("scs/", cone_search, name="scs"),
    path("", include("webui.urls")),
]
