from django.urls import path

from webui import views

app_name = "webui"
urlpatterns = [
    path("", views.home, name="home"),
    path("surveys/<str:name>/", views.survey_detail, name="survey"),
]
