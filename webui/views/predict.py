"""The /predict/ page: one galaxy's M/L from an uploaded g cutout, as ``POST /api/predict/`` gives it, and a
whole sample as a prediction job, as ``POST /api/predict/jobs/`` takes it, with the user's jobs listed."""

from __future__ import annotations

import base64

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from catalogue import selectors
from catalogue.api.serializers import PredictUploadSerializer
from catalogue.models import PredictionJob
from catalogue.orchestration import prediction_jobs as flow
from catalogue.selectors import prediction_jobs as jobs
from catalogue.services import prediction_jobs as job_files
from catalogue.services.pictures import upload_pngs
from catalogue.services.predict_one import Upload, UploadError, predict_upload
from webui.cells import DASH, format_cell, interval

#: The form's optional numbers: left out when empty, as the API's multipart form would.
PREDICT_FIELDS = ("z", "mag_g", "magerr_g", "mag_i", "objid", "models")


@login_required  # the site's sign-in page (settings.LOGIN_URL) says what signing in gives
def predict(request: HttpRequest) -> HttpResponse:
    """One galaxy's M/L from an uploaded g cutout, with its images."""
    context: dict = {"sets": selectors.model_sets(limit=50), "values": {}, "errors": {}, **_jobs_context(request)}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in PREDICT_FIELDS}
        context["values"] = values
        form = PredictUploadSerializer(data={**{k: v for k, v in values.items() if v}, "image": request.FILES.get("image")})
        if not form.is_valid():
            context["errors"] = {k: " ".join(str(m) for m in v) for k, v in form.errors.items()}
        else:
            data = form.validated_data
            try:
                model_set = selectors.resolve_model_set(data["models"]) if data.get("models") else selectors.default_model_set()
                upload = Upload(
                    data["image"].read(), data["z"], data["mag_g"], data.get("magerr_g"), data.get("mag_i"), data.get("objid")
                )
                result = predict_upload(upload, model_set)
            except UploadError as exc:
                field, _, message = str(exc).partition(": ")
                context["errors"] = {field: message}
            except ValueError as exc:
                context["errors"] = {"models": str(exc)}
            else:
                context["result"] = result.as_dict()
                context["rows"] = [_prediction_row(name, p) for name, p in result.predictions.items()]
                context["images"] = [
                    (caption, "data:image/png;base64," + base64.b64encode(png).decode())
                    for caption, png in upload_pngs(result.galaxy)
                ]
    return render(request, "webui/predict.html", context, status=400 if context["errors"] else 200)


def _prediction_row(name: str, p: dict) -> tuple:
    return (
        name,
        format_cell(p["ml"]),
        interval(p["ml_lo68"], p["ml_hi68"]),
        interval(p["ml_lo95"], p["ml_hi95"]),
        f"{p['mstar']:.3e}" if p["mstar"] else DASH,
        interval(p["mstar_lo68"], p["mstar_hi68"]),
        "; ".join(p["reasons"]) or "no",
    )


def _jobs_context(request: HttpRequest) -> dict:
    """The user's jobs as the page lists them: phase, progress, counts, downloads; refresh while one runs."""
    rows = []
    for job in jobs.own_jobs(request.user)[:50]:
        job = flow.refresh(job)
        rows.append(
            {
                "job": job,
                "progress": flow.progress(job),
                "counts": jobs.job_counts(job),
                "skipped": jobs.skipped_models(job),
                "n_faults": len(job.faults) + len(jobs.galaxy_faults(job)),
                "formats": job_files.RESULT_FORMATS if job.phase == PredictionJob.Phase.COMPLETED else (),
                "active": job.phase in PredictionJob.ACTIVE,
            }
        )
    active = any(row["active"] for row in rows)
    return {"jobs": rows, "jobs_active": active, "job_errors": "", "job_days": f"{settings.PREDICTION_JOB_DAYS:g}"}


@login_required
@require_POST
def submit_job(request: HttpRequest) -> HttpResponse:
    """A sample from the page's job form (an archive, or many FITS files, and a table) as a prediction job."""
    name = request.POST.get("models", "").strip()
    try:
        model_set = selectors.resolve_model_set(name) if name else selectors.default_model_set()
        job = job_files.submit(request.user, request.FILES.getlist("sample"), request.FILES.get("table"), model_set)
    except (ValueError, job_files.JobRefused) as exc:
        context = {"sets": selectors.model_sets(limit=50), "values": {}, "errors": {}, **_jobs_context(request)}
        context["job_errors"] = str(exc)
        return render(request, "webui/predict.html", context, status=getattr(exc, "status", 400))
    flow.send(job)
    messages.info(request, f"Job {job.pk} submitted: {job.n_rows} galaxies with model set {model_set.name}.")
    return redirect("webui:predict")


@login_required
@require_POST
def remove_job(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel a running job, or delete a finished one with its results."""
    job = jobs.job_for(request.user, job_id)
    if job is None:
        raise Http404("no such prediction job")
    job = flow.refresh(job)
    if job.phase in PredictionJob.ACTIVE:
        flow.cancel(job, request.user)
        messages.info(request, f"Job {job.pk} cancelled.")
    else:
        job_files.delete(job)
        messages.info(request, f"Job {job.pk} deleted with its results.")
    return redirect("webui:predict")
