"""Celery tasks: where the science in ``pipeline`` meets the database, one task per registry stage.

Each stage of :mod:`catalogue.registry` gets a task ``catalogue.tasks.<stage>`` that runs
one chunk of a run through the stage's body (:mod:`catalogue.stages`), routed to the
stage's queue (``catalogue.celery.TASK_ROUTES``) with the time limits of the stage's kind
(:mod:`catalogue.limits`). Tasks carry only the execution policy: those limits, automatic
retries with backoff for transient database and broker errors, and failing the run when
a chunk fails for good. Services never import this module; they send tasks by name.
"""

from __future__ import annotations

import logging
import os
import platform
import socket

from celery import Task, shared_task
from django.conf import settings

from catalogue import limits, registry, stages
from catalogue.models import PredictionJob, RunChunk
from catalogue.orchestration import reaper
from catalogue.orchestration.start import start
from catalogue.selectors import survey_named
from catalogue.services import runs

#: Errors worth retrying: the database or the broker went away for a moment.
TRANSIENT_ERRORS = runs.TRANSIENT_ERRORS
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}
#: A chunk task waits out a longer outage: backing off 2, 4, ... 60 s, about eight minutes in all
#: (less with jitter). After that its chunk is left queued (or, if it had begun, silent) in the
#: ledger, and the reaper sends it again once the services are back (docs/deployment.md).
CHUNK_RETRY_POLICY = {**RETRY_POLICY, "max_retries": 12}
CONTROL_LIMITS = limits.limits("control")
log = logging.getLogger(__name__)


def _worker_report(task) -> dict:
    delivery = task.request.delivery_info or {}
    return {
        "hostname": task.request.hostname or socket.gethostname(),
        "queue": delivery.get("routing_key", ""),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }


def _worker_name(task) -> str:
    return f"{task.request.hostname or socket.gethostname()} pid {os.getpid()}"


class ChunkTask(Task):
    """A chunk task whose run fails when the chunk fails for good (a bug, the hard limit).

    Not when the database or the broker stayed away longer than the retries: the chunk is still
    owed in the ledger, and the reaper sends it again once they are back.
    """

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: ARG002 - Celery's signature
        if isinstance(exc, TRANSIENT_ERRORS):
            log.warning("%s gave up on chunk %s for now (%s): the reaper sends it again", self.name, args, exc)
            return
        try:
            run_id = RunChunk.objects.filter(pk=args[0]).values_list("run_id", flat=True).first() if args else None
            if run_id is not None:
                runs.fail_run(run_id, exc, where=f"task {self.name}")
        except TRANSIENT_ERRORS as lost:  # the database went away meanwhile: the reaper finds the silent chunk
            log.warning("could not record the failure of %s on chunk %s: %s", self.name, args, lost)


def chunk_task(stage: registry.Stage):
    """The task that runs one chunk of ``stage``'s runs (made for every registry entry, and for one added later)."""
    stage_limits = limits.limits(stage.limit)

    def run_chunk(self, chunk_id: int) -> dict:
        heartbeat = None if self.request.is_eager else limits.heartbeat_s()  # in-process: no worker to lose
        hooks = stages.body(stage.name).HOOKS
        return runs.execute_chunk(chunk_id, _worker_name(self), hooks, heartbeat_s=heartbeat, task_id=self.request.id or "")

    run_chunk.__name__ = run_chunk.__qualname__ = stage.name
    run_chunk.__doc__ = f"Run one chunk of a {stage.name} run ({stage.label}); {stage.queue} queue, {stage.limit} limits."
    return shared_task(
        bind=True,
        base=ChunkTask,
        name=stage.task_name,
        soft_time_limit=stage_limits.soft_s,
        time_limit=stage_limits.hard_s,
        ignore_result=True,  # the ledger holds the outcome; a result backend gone away must not fail the chunk
        **CHUNK_RETRY_POLICY,
    )(run_chunk)


stages.check_bodies()
#: stage name -> its chunk task; a stage added to the registry later gets one too.
STAGE_TASKS = {stage.name: chunk_task(stage) for stage in registry.stages()}
registry.added_listeners.append(lambda stage: STAGE_TASKS.setdefault(stage.name, chunk_task(stage)))


@shared_task(bind=True, name="catalogue.tasks.worker_info")
def worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the cpu queue."""
    return _worker_report(self)


@shared_task(bind=True, name="catalogue.tasks.gpu_worker_info")
def gpu_worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the gpu queue."""
    return _worker_report(self)


@shared_task(
    bind=True,
    name="catalogue.tasks.start_stage",
    soft_time_limit=CONTROL_LIMITS.soft_s,
    time_limit=CONTROL_LIMITS.hard_s,
    **RETRY_POLICY,
)
def start_stage_task(self, stage: str, survey: str, preset: str = "fast", force: bool = False, **options) -> int:
    """Start a stage on a survey from a worker (through the one start path); returns the run id."""
    found = survey_named(survey)
    if found is None:
        raise ValueError(f"no survey named {survey!r}")
    run = start(found, [stage], preset_name=preset, force=force, task_id=self.request.id or "", **options)
    return run.pk


@shared_task(
    name="catalogue.tasks.refresh_catalogue_choices",
    soft_time_limit=CONTROL_LIMITS.soft_s,
    time_limit=CONTROL_LIMITS.hard_s,
    **RETRY_POLICY,
)
def refresh_catalogue_choices() -> dict[str, int]:
    """Store the catalogue's choice of model per galaxy for each public survey whose stored choices went
    stale and whose changes have settled (scheduled by celery beat every minute); survey -> choices stored."""
    from catalogue.services import catalogue_choices

    return catalogue_choices.refresh_stale()


@shared_task(
    bind=True,
    name="catalogue.tasks.reap_stale_runs",
    soft_time_limit=CONTROL_LIMITS.soft_s,
    time_limit=CONTROL_LIMITS.hard_s,
    **RETRY_POLICY,
)
def reap_stale_runs(self) -> list[int]:
    """Hand out lost chunks, send unclaimed ones again, move stalled workflows on, fail runs no worker
    can take, and reap TAP jobs and prediction jobs too (scheduled by celery beat every minute)."""
    from catalogue.orchestration import prediction_jobs
    from catalogue.tap import jobs

    jobs.reap()
    prediction_jobs.reap()
    here = (self.request.delivery_info or {}).get("routing_key", "")
    return reaper.reap_stale_runs(consumed_here=(here,) if here else ())


#: An async TAP query is bounded by its execution duration (its statement timeout); the task
#: gets a minute more to write the result. Not a limits kind: a redelivered job finds itself
#: no longer QUEUED and stops at once, so the broker's visibility timeout need not cover it.
TAP_SOFT_S = settings.TAP_ASYNC_DURATION_S + 60


@shared_task(
    name="catalogue.tasks.tap_job",
    soft_time_limit=TAP_SOFT_S,
    time_limit=TAP_SOFT_S + 60,
    **RETRY_POLICY,
)
def tap_job(job_id: str) -> str:
    """Run one asynchronous TAP query (catalogue.tap.jobs) on the cpu queue: the phase it ends in."""
    from catalogue.tap import jobs

    return jobs.execute(job_id)


PREPARE_LIMITS = limits.limits("chunk")


@shared_task(
    bind=True,
    name="catalogue.tasks.prepare_prediction_job",
    soft_time_limit=PREPARE_LIMITS.soft_s,
    time_limit=PREPARE_LIMITS.hard_s,
    ignore_result=True,  # the job's record holds the outcome
    **CHUNK_RETRY_POLICY,
)
def prepare_prediction_job(self, job_id: str) -> str:
    """Unpack and ingest a prediction job's sample and start its model set's stages (cpu queue)."""
    from catalogue.orchestration import prediction_jobs

    PredictionJob.objects.filter(pk=job_id).update(celery_task_id=self.request.id or "")
    return prediction_jobs.prepare(job_id)
