from django.urls import path

from webui import views

app_name = "webui"
urlpatterns = [
    path("", views.home, name="home"),
    path("surveys/<str:name>/", views.survey_detail, name="survey"),
    path("galaxies/<int:pk>/", views.galaxy_detail, name="galaxy"),
    path("galaxies/<int:pk>/<str:stage>.png", views.galaxy_image, name="galaxy-image"),
]
