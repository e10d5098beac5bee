"""/api/ (REST, schema, docs, downloads) and /scs/ (IVOA Simple Cone Search)."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from catalogue.api import prediction_jobs, views
from catalogue.api.schema import SchemaView

router = DefaultRouter()
router.register("surveys", views.SurveyViewSet)
router.register("galaxies", views.GalaxyViewSet, basename="galaxy")
router.register("models", views.TrainedModelViewSet, basename="model")
router.register("model-sets", views.ModelSetViewSet)
router.register("runs", views.RunViewSet)
router.register("experiments", views.ExperimentResultViewSet)

app_name = "api"
urlpatterns = [
    path("catalogue.<str:fmt>", views.CatalogueDownload.as_view(), name="catalogue-download"),
    path("predict/", views.PredictUpload.as_view(), name="predict"),
    path("predict/jobs/", prediction_jobs.PredictionJobList.as_view(), name="prediction-jobs"),
    path("predict/jobs/<str:job_id>/", prediction_jobs.PredictionJobDetail.as_view(), name="prediction-job"),
    path(
        "predict/jobs/<str:job_id>/results.<str:fmt>",
        prediction_jobs.PredictionJobResults.as_view(),
        name="prediction-job-results",
    ),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("", include(router.urls)),
    re_path(r"^(?P<unmatched>[\s\S]*)\Z", views.not_found),
]
