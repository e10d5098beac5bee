"""/api/predict/jobs/: a signed-in user's own sample predicted on the workers (docs/prediction_jobs.md).

``POST`` takes the sample (multipart: ``sample`` once or many times, optional ``table``, optional
``models``) and answers 201 with the QUEUED job; ``GET`` lists the user's jobs or shows one (its
UWS phase, progress, counts and faults); ``results.<fmt>`` gives every galaxy's predictions;
``DELETE`` cancels a running job, or removes a finished one with its galaxies and files. A job
is its owner's and staff's: anyone else gets 404, an anonymous caller 401.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalogue import selectors
from catalogue.api.serializers import model_set_field
from catalogue.models import PredictionJob
from catalogue.orchestration import prediction_jobs as flow
from catalogue.selectors import prediction_jobs as jobs
from catalogue.services import prediction_jobs as job_files
from catalogue.services.writers import CONTENT_TYPES


class JobSubmissionSerializer(serializers.Serializer):
    """A sample to predict: cutouts (an archive or the files themselves), a table, and the model set."""

    sample = serializers.ListField(
        child=serializers.FileField(),
        help_text="a zip or tar archive (gzip allowed) of g-band FITS cutouts named <objid>_g.fits (i band optional: "
        "<objid>_i.fits), or a bundle; or the FITS files themselves, one part each",
    )
    table = serializers.FileField(
        required=False,
        help_text="CSV, VOTable or FITS table with objid, z, mag_g (AB mag) and optionally magerr_g, mag_i, ra, dec (deg); "
        "may be left out when the archive holds a bundle's catalogue.csv",
    )
    models = model_set_field()


class PredictionJobSerializer(serializers.Serializer):
    """A job as its owner sees it."""

    id = serializers.UUIDField()
    url = serializers.CharField()
    phase = serializers.ChoiceField(choices=PredictionJob.Phase.choices, help_text="UWS phase")
    message = serializers.CharField(help_text="what it is doing now")
    progress = serializers.FloatField(help_text="fraction done, 0-1")
    model_set = serializers.CharField(allow_null=True)
    counts = serializers.DictField(help_text="galaxies (table rows), accepted (ingested), predicted, failed")
    stages = serializers.ListField(
        help_text="each apply stage: stage, status, progress (0-1), items_done, items_failed, items_total"
    )
    models_skipped = serializers.DictField(
        help_text="named model -> why it predicted nothing here (a g-only sample: the i models)"
    )
    faults = serializers.ListField(help_text="per entry, row or galaxy left out: kind, reason, objid, file, row (of the table)")
    error = serializers.CharField(help_text="why the job failed as a whole")
    results = serializers.DictField(help_text="format -> URL of the results, once COMPLETED")
    upload_bytes = serializers.IntegerField()
    created = serializers.DateTimeField()
    started = serializers.DateTimeField(allow_null=True)
    finished = serializers.DateTimeField(allow_null=True)
    destruction = serializers.DateTimeField(help_text="when the job and its results are deleted (UTC)")


def job_json(job: PredictionJob, request, full: bool = True) -> dict:
    """The job's representation; ``full`` adds its stages and faults (the list leaves them out)."""
    job = flow.refresh(job)
    url = request.build_absolute_uri(reverse("api:prediction-job", args=[job.pk]))
    body = {
        "id": str(job.pk),
        "url": url,
        "phase": job.phase,
        "message": job.message,
        "progress": round(flow.progress(job), 4),
        "model_set": job.model_set.name if job.model_set else None,
        "counts": jobs.job_counts(job),
        "models_skipped": jobs.skipped_models(job),
        "error": job.error,
        "results": {
            fmt: request.build_absolute_uri(reverse("api:prediction-job-results", args=[job.pk, fmt]))
            for fmt in job_files.RESULT_FORMATS
        }
        if job.phase == PredictionJob.Phase.COMPLETED
        else {},
        "upload_bytes": job.upload_bytes,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "destruction": job.destruction,
    }
    if full:
        body["stages"] = [
            {
                "stage": stage,
                "status": run.status if run else "waiting",
                "progress": round(run.progress, 4) if run else 0.0,
                "items_done": run.items_done if run else 0,
                "items_failed": run.items_failed if run else 0,
                "items_total": run.items_total if run else 0,
            }
            for stage, run in jobs.stage_progress(job)
        ]
        body["faults"] = [*job.faults, *jobs.galaxy_faults(job)]
    return body


def _own_job(request: Request, job_id) -> PredictionJob:
    job = jobs.job_for(request.user, job_id)
    if job is None:
        raise NotFound("no such prediction job")  # another user's job is as absent as one that never existed
    return job


class PredictionJobList(APIView):
    """The user's prediction jobs; POST submits a new one."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses={200: PredictionJobSerializer(many=True)})
    def get(self, request: Request) -> Response:
        job_files.purge_expired()
        return Response([job_json(job, request, full=False) for job in jobs.own_jobs(request.user)])

    @extend_schema(request={"multipart/form-data": JobSubmissionSerializer}, responses={201: PredictionJobSerializer})
    def post(self, request: Request) -> Response:
        samples = request.FILES.getlist("sample")
        table = request.FILES.get("table")
        name = (request.data.get("models") or "").strip()
        try:
            model_set = selectors.resolve_model_set(name) if name else selectors.default_model_set()
        except ValueError as exc:
            raise ValidationError({"models": [str(exc)]}) from exc
        try:
            job = job_files.submit(request.user, samples, table, model_set)
        except job_files.JobRefused as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        flow.send(job)
        job.refresh_from_db()
        body = job_json(job, request)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class PredictionJobDetail(APIView):
    """One job: its phase, progress, counts and faults; DELETE cancels it (running) or removes it (finished)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={200: PredictionJobSerializer})
    def get(self, request: Request, job_id: str) -> Response:
        return Response(job_json(_own_job(request, job_id), request))

    @extend_schema(responses={200: PredictionJobSerializer, 204: None})
    def delete(self, request: Request, job_id: str) -> Response:
        job = flow.refresh(_own_job(request, job_id))
        if job.phase in PredictionJob.ACTIVE:
            return Response(job_json(flow.cancel(job, request.user), request))
        job_files.delete(job)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PredictionJobResults(APIView):
    """Every galaxy of a COMPLETED job with the catalogue's M/L and every named model's, with units."""

    permission_classes = [permissions.IsAuthenticated]

    def perform_content_negotiation(self, request, force=False):  # noqa: ARG002 - DRF's signature
        """The file's format is in the URL: an Accept header naming it (``text/csv``, a VOTable type) is no 406."""
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=job_files.RESULT_FORMATS, description="file format")
        ],
        responses={(200, media.split(";")[0]): OpenApiTypes.BINARY for media in CONTENT_TYPES.values()},
    )
    def get(self, request: Request, job_id: str, fmt: str) -> HttpResponse:
        job = flow.refresh(_own_job(request, job_id))
        if fmt not in job_files.RESULT_FORMATS:
            raise NotFound(f"unknown format {fmt!r}; choose one of {', '.join(job_files.RESULT_FORMATS)}")
        if job.phase != PredictionJob.Phase.COMPLETED:
            return Response(
                {"detail": f"the job is {job.phase}: results come once it is COMPLETED", "phase": job.phase},
                status=status.HTTP_409_CONFLICT,
            )
        response = HttpResponse(job_files.results_bytes(job, fmt), content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="morphomass-job-{job.pk}.{fmt}"'
        return response
