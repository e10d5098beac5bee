from django.urls import path

from webui import views

app_name = "webui"
urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.health, name="health"),
    path("surveys/<str:name>/", views.survey_detail, name="survey"),
    path("surveys/<str:name>/moc.fits", views.survey_moc, name="survey-moc"),
    path("galaxies/<int:pk>/", views.galaxy_detail, name="galaxy"),
    path("galaxies/<int:pk>/<str:stage>.png", views.galaxy_image, name="galaxy-image"),
    path("catalogue/", views.catalogue_browser, name="catalogue"),
    path("models/<int:pk>/", views.model_detail, name="model"),
    path("models/sets/", views.model_sets, name="model-sets"),
    path("predict/", views.predict, name="predict"),
    path("adql/", views.adql, name="adql"),
    path("surveys/<str:name>/experiments/", views.experiments, name="experiments"),
    path("surveys/<str:name>/experiments.csv", views.experiments_csv, name="experiments-csv"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("js/plotly.min.js", views.plotly_js, name="plotly-js"),
]
