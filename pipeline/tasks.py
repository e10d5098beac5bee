"""Celery tasks: the one place that binds the science in ``pipeline`` to the database.

Routing is by name (``catalogue.celery.TASK_ROUTES``): ``pipeline.tasks.gpu_*`` go to the
``gpu`` queue, everything else here to ``cpu``. Tasks are thin: they load rows, call a
service or a science function, and store the result.
"""

from __future__ import annotations

import os
import platform
import socket

from celery import shared_task


def _worker_report(task) -> dict:
    delivery = task.request.delivery_info or {}
    return {
        "hostname": task.request.hostname or socket.gethostname(),
        "queue": delivery.get("routing_key", ""),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }


@shared_task(bind=True, name="pipeline.tasks.worker_info")
def worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the cpu queue."""
    return _worker_report(self)


@shared_task(bind=True, name="pipeline.tasks.gpu_worker_info")
def gpu_worker_info(self) -> dict:
    """Report which worker and queue ran this: a health check for the gpu queue."""
    return _worker_report(self)


@shared_task(name="pipeline.tasks.preprocess_galaxies")
def preprocess_galaxies(survey: str, resolutions: list[int] | None = None, preset: str = "fast", force: bool = False) -> int:
    """Preprocess a survey's galaxies (chunked, idempotent); returns the TrainingRun id."""
    from catalogue.models import Survey
    from catalogue.services.preprocessing import start_preprocess_run

    run = start_preprocess_run(Survey.objects.get(name=survey), resolutions, preset_name=preset, force=force)
    return run.pk


@shared_task(name="pipeline.tasks.preprocess_chunk")
def preprocess_chunk(run_id: int, galaxy_ids: list[int]) -> dict:
    """Preprocess one chunk of a run; a crash of the whole chunk fails the run with its traceback."""
    from catalogue.services.preprocessing import fail_run, run_chunk

    try:
        return run_chunk(run_id, galaxy_ids)
    except Exception as exc:
        fail_run(run_id, exc)
        raise
