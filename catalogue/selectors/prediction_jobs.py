"""Prediction jobs: whose they are, how far they got, and what their galaxies got.

A job is its owner's (and staff's): every read here takes the user asking, and a job
another user owns is as absent as one that never existed.
"""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet
from django.db.models.functions import Now

from catalogue.columns import PREDICTION_FIELDS
from catalogue.models import Galaxy, GalaxyStatus, Prediction, PredictionJob, Preprocessed, Run
from catalogue.selectors.runs import workflow_stages


def visible_jobs(user) -> QuerySet[PredictionJob]:
    """The jobs ``user`` may see: their own; every job for staff; none for an anonymous visitor."""
    if user is None or not user.is_authenticated:
        return PredictionJob.objects.none()
    found = PredictionJob.objects.select_related("model_set", "survey", "workflow", "owner")
    return found if user.is_staff else found.filter(owner=user)


def own_jobs(user) -> QuerySet[PredictionJob]:
    """The user's own jobs, newest first (staff included: a list shows one's own)."""
    return visible_jobs(user).filter(owner=user)


def job_for(user, job_id) -> PredictionJob | None:
    """The job ``job_id`` if ``user`` may see it, else None (a bad id as well)."""
    try:
        key = uuid.UUID(str(job_id))
    except ValueError:
        return None
    return visible_jobs(user).filter(pk=key).first()


def running_jobs(user) -> int:
    """The user's jobs queued or running (a job whose workflow has ended counts no more, read or not)."""
    active = PredictionJob.objects.filter(owner=user, phase__in=PredictionJob.ACTIVE)
    return active.filter(Q(workflow__isnull=True) | Q(workflow__status__in=Run.ACTIVE)).count()


def expired_jobs() -> QuerySet[PredictionJob]:
    """Jobs past their destruction time."""
    return PredictionJob.objects.filter(destruction__lt=Now())


def jobs_to_send_again(older_than) -> QuerySet[PredictionJob]:
    """QUEUED jobs whose preparation no worker took since ``older_than`` (its message may be lost)."""
    return PredictionJob.objects.filter(phase=PredictionJob.Phase.QUEUED, sent__lt=older_than) | PredictionJob.objects.filter(
        phase=PredictionJob.Phase.QUEUED, sent__isnull=True, created__lt=older_than
    )


def stalled_preparations(older_than) -> QuerySet[PredictionJob]:
    """EXECUTING jobs still preparing (no workflow yet) whose worker has not beaten since ``older_than``."""
    return PredictionJob.objects.filter(phase=PredictionJob.Phase.EXECUTING, workflow__isnull=True, heartbeat__lt=older_than)


def stage_progress(job: PredictionJob) -> list[tuple[str, Run | None]]:
    """The job's workflow's stages, each with its run (None before it starts)."""
    if job.workflow is None:
        return []
    return [(stage, run) for stage, run, _ in workflow_stages(job.workflow)]


def skipped_models(job: PredictionJob) -> dict[str, str]:
    """The named models the prediction stage skipped for the sample, with why (a g-only sample: the i models)."""
    for _, run in stage_progress(job):
        if run is not None and "skipped" in (run.result or {}):
            return dict(run.result["skipped"])
    return {}


def galaxy_faults(job: PredictionJob) -> list[dict]:
    """The galaxies that failed after ingest (preprocessing), each with its reason."""
    if job.survey_id is None:
        return []
    failed = Preprocessed.objects.filter(galaxy__survey_id=job.survey_id, status=Preprocessed.Status.FAILED)
    return [
        {"kind": "preprocess_failed", "reason": error or "preprocessing failed", "objid": objid, "file": ""}
        for objid, error in failed.values_list("galaxy__objid", "error").order_by("galaxy__objid")
    ]


def job_counts(job: PredictionJob) -> dict[str, int]:
    """Galaxies in the table, accepted at ingest, predicted (by at least one model), failed, flagged by the catalogue model."""
    if job.survey_id is None:
        return {"galaxies": job.n_rows, "accepted": 0, "predicted": 0, "failed": 0}
    galaxies = Galaxy.objects.filter(survey_id=job.survey_id)
    accepted = galaxies.exclude(status=GalaxyStatus.REJECTED)
    predicted = Prediction.objects.filter(galaxy__survey_id=job.survey_id).values("galaxy_id").distinct().count()
    preprocess_failed = Preprocessed.objects.filter(galaxy__survey_id=job.survey_id, status=Preprocessed.Status.FAILED).count()
    return {
        "galaxies": job.n_rows,
        "accepted": accepted.count(),
        "predicted": predicted,
        "failed": galaxies.filter(status=GalaxyStatus.REJECTED).count() + preprocess_failed,
    }


def job_predictions(job: PredictionJob) -> list[dict]:
    """Every prediction of the job's galaxies by its set's models: galaxy id, model name and the prediction's fields."""
    if job.survey_id is None:
        return []
    found = Prediction.objects.filter(galaxy__survey_id=job.survey_id)
    if job.model_set_id is not None:
        found = found.filter(model__model_set_id=job.model_set_id)
    return list(found.values("galaxy_id", "model__name", *PREDICTION_FIELDS))
