from django.urls import path

from webui.views import accounts, adql, galaxies, models, predict, runs, service, surveys

app_name = "webui"
urlpatterns = [
    path("", surveys.home, name="home"),
    path("healthz", service.health, name="health"),
    path("surveys/<str:name>/", surveys.survey_detail, name="survey"),
    path("surveys/<str:name>/moc.fits", surveys.survey_moc, name="survey-moc"),
    path("galaxies/<int:pk>/", galaxies.galaxy_detail, name="galaxy"),
    path("galaxies/<int:pk>/<str:stage>.png", galaxies.galaxy_image, name="galaxy-image"),
    path("galaxies/<int:pk>/<str:band>.fits", galaxies.galaxy_fits, name="galaxy-fits"),
    path("catalogue/", galaxies.catalogue_browser, name="catalogue"),
    path("models/<int:pk>/", models.model_detail, name="model"),
    path("models/sets/", models.model_sets, name="model-sets"),
    path("predict/", predict.predict, name="predict"),
    path("predict/jobs/", predict.submit_job, name="predict-job"),
    path("predict/jobs/<str:job_id>/remove/", predict.remove_job, name="predict-job-remove"),
    path("accounts/sign-in/", accounts.SignIn.as_view(), name="sign-in"),
    path("accounts/sign-out/", accounts.SignOut.as_view(), name="sign-out"),
    path("accounts/token/", accounts.token, name="token"),
    path("adql/", adql.adql, name="adql"),
    path("surveys/<str:name>/experiments/", surveys.experiments, name="experiments"),
    path("surveys/<str:name>/experiments.csv", surveys.experiments_csv, name="experiments-csv"),
    path("runs/<int:pk>/", runs.run_detail, name="run"),
    path("js/plotly.min.js", service.plotly_js, name="plotly-js"),
]
