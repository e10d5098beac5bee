"""Celery tasks: the one place that binds the science in ``pipeline`` to the database.

Routing is by name (``catalogue.celery.TASK_ROUTES``): ``pipeline.tasks.gpu_*`` go to the
``gpu`` queue, everything else here to ``cpu``. Tasks are thin wrappers: they call a
service (which imports nothing from here) and carry the execution policy: time limits per
task kind (:mod:`catalogue.limits`) and automatic retries with backoff for transient
database and broker errors.
"""

from __future__ import annotations

import os
import platform
import socket

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from catalogue.limits import limits

#: Errors worth retrying: the database or the broker went away for a moment.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerError)
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}
CHUNK_LIMITS = limits("chunk")
CONTROL_LIMITS = limits("control")


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
    """A chunk task whose run fails when the chunk fails for good (retries spent, hard limit)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: ARG002 - Celery's signature
        from catalogue.models import RunChunk
        from catalogue.services.runs import fail_run

        run_id = RunChunk.objects.filter(pk=args[0]).values_list("run_id", flat=True).first() if args else None
        if run_id is not None:
            fail_run(run_id, exc, where=f"task {self.name}")


@shared_task(bind=True, name="pipeline.tasks.worker_info")
def worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the cpu queue."""
    return _worker_report(self)


@shared_task(bind=True, name="pipeline.tasks.gpu_worker_info")
def gpu_worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the gpu queue."""
    return _worker_report(self)


@shared_task(
    bind=True,
    name="pipeline.tasks.preprocess_galaxies",
    soft_time_limit=CONTROL_LIMITS.soft_s,
    time_limit=CONTROL_LIMITS.hard_s,
    **RETRY_POLICY,
)
def preprocess_galaxies(
    self, survey: str, resolutions: list[int] | None = None, preset: str = "fast", force: bool = False
) -> int:
    """Start preprocessing a survey's galaxies (chunked, idempotent); returns the run id."""
    from catalogue.models import Survey
    from catalogue.services.preprocess_runs import start_preprocess_run

    run = start_preprocess_run(
        Survey.objects.get(name=survey), resolutions, preset_name=preset, force=force, task_id=self.request.id or ""
    )
    return run.pk


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.preprocess_chunk",
    soft_time_limit=CHUNK_LIMITS.soft_s,
    time_limit=CHUNK_LIMITS.hard_s,
    **RETRY_POLICY,
)
def preprocess_chunk(self, chunk_id: int) -> dict:
    """Preprocess one chunk of a run (see catalogue.services.preprocess_chunk)."""
    from catalogue.services.preprocess_chunk import PREPROCESS_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), PREPROCESS_STAGE)


@shared_task(
    name="pipeline.tasks.reap_stale_runs",
    soft_time_limit=CONTROL_LIMITS.soft_s,
    time_limit=CONTROL_LIMITS.hard_s,
    **RETRY_POLICY,
)
def reap_stale_runs() -> list[int]:
    """Fail runs whose workers went silent (scheduled by celery beat every minute)."""
    from catalogue.services.runs import reap_stale_runs as reap

    return reap()


TRAIN_LIMITS = limits("train")


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.gpu_train_cnn",
    soft_time_limit=TRAIN_LIMITS.soft_s,
    time_limit=TRAIN_LIMITS.hard_s,
    **RETRY_POLICY,
)
def gpu_train_cnn(self, chunk_id: int) -> dict:
    """Train a run's CNNs (see catalogue.services.cnn_training); gpu queue."""
    from catalogue.services.cnn_training import CNN_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), CNN_STAGE)


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.gpu_extract_features",
    soft_time_limit=CHUNK_LIMITS.soft_s,
    time_limit=CHUNK_LIMITS.hard_s,
    **RETRY_POLICY,
)
def gpu_extract_features(self, chunk_id: int) -> dict:
    """Extract the CNN features of a chunk of galaxies (see catalogue.services.feature_extraction); gpu queue."""
    from catalogue.services.feature_extraction import FEATURES_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), FEATURES_STAGE)


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.train_gbm",
    soft_time_limit=TRAIN_LIMITS.soft_s,
    time_limit=TRAIN_LIMITS.hard_s,
    **RETRY_POLICY,
)
def train_gbm(self, chunk_id: int) -> dict:
    """Fit and store a run's named M/L models (see catalogue.services.gbm_training); cpu queue."""
    from catalogue.services.gbm_training import GBM_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), GBM_STAGE)


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.run_experiments",
    soft_time_limit=TRAIN_LIMITS.soft_s,
    time_limit=TRAIN_LIMITS.hard_s,
    **RETRY_POLICY,
)
def run_experiments(self, chunk_id: int) -> dict:
    """Run and store the paper's experiments (see catalogue.services.experiment_stage); cpu queue."""
    from catalogue.services.experiment_stage import EXPERIMENTS_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), EXPERIMENTS_STAGE)


@shared_task(
    bind=True,
    base=ChunkTask,
    name="pipeline.tasks.predict_catalogue",
    soft_time_limit=CHUNK_LIMITS.soft_s,
    time_limit=CHUNK_LIMITS.hard_s,
    **RETRY_POLICY,
)
def predict_catalogue(self, chunk_id: int) -> dict:
    """Predict M/L and stellar mass for every galaxy of a survey (see catalogue.services.prediction_stage); cpu queue."""
    from catalogue.services.prediction_stage import PREDICT_STAGE
    from catalogue.services.runs import execute_chunk

    return execute_chunk(chunk_id, _worker_name(self), PREDICT_STAGE)
