"""TAP 1.1's endpoints under /tap (no trailing slashes: clients append /sync, /async, ... to the base), and DataLink."""

from django.urls import path

from catalogue.tap import views

urlpatterns = [
    path("tap", views.Root.as_view(), name="tap"),
    path("tap/sync", views.Sync.as_view(), name="tap-sync"),
    path("tap/async", views.AsyncJobs.as_view(), name="tap-async"),
    path("tap/async/<uuid:job_id>", views.AsyncJob.as_view(), name="tap-job"),
    path("tap/async/<uuid:job_id>/results/result", views.AsyncResult.as_view(), name="tap-result"),
    path("tap/async/<uuid:job_id>/<str:part>", views.AsyncJobPart.as_view(), name="tap-job-part"),
    path("tap/capabilities", views.Capabilities.as_view(), name="tap-capabilities"),
    path("tap/availability", views.Availability.as_view(), name="tap-availability"),
    path("tap/tables", views.Tables.as_view(), name="tap-tables"),
    path("tap/examples", views.Examples.as_view(), name="tap-examples"),
    path("datalink/links", views.Links.as_view(), name="datalink-links"),
]
