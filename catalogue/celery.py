"""The Celery application: two queues, routes by task name, JSON only.

The ``cpu`` queue takes preprocessing, ingest-side work, GBM training and predictions;
the ``gpu`` queue takes CNN training and feature extraction, and its workers run with
``--concurrency 1`` so one process owns the accelerator.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from catalogue import limits, registry
from catalogue.registry import CPU_QUEUE, GPU_QUEUE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")


def route_stage_task(name: str, *_args, **_kwargs) -> dict | None:
    """A stage's chunk task goes to its registry queue (read when sent, so a stage added later is routed too)."""
    prefix, _, stage = name.rpartition(".")
    if prefix == "catalogue.tasks" and stage in registry.stage_names():
        return {"queue": registry.stage(stage).queue}
    return None


# Each stage's chunk task to its registry queue; anything else (starting runs, the reaper,
# health checks) by name: gpu_* to the gpu queue, the rest to the cpu queue.
TASK_ROUTES = (
    route_stage_task,
    {"catalogue.tasks.gpu_*": {"queue": GPU_QUEUE}, "catalogue.tasks.*": {"queue": CPU_QUEUE}},
)

app = Celery("catalogue")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue(CPU_QUEUE), Queue(GPU_QUEUE)),
    task_default_queue=CPU_QUEUE,
    task_routes=TASK_ROUTES,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # A task is acknowledged only once it finished, so a crashed worker's task is redelivered;
    # the run engine's ledger makes a redelivered chunk safe and bounds how often one loops.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Redis hands an unacknowledged task to another worker after the visibility timeout: it
    # stays above the longest hard time limit, so a task still running is never run twice.
    broker_transport_options={
        "visibility_timeout": limits.visibility_timeout_s(),
        "unacked_restore_interval": int(os.environ.get("CELERY_RESTORE_INTERVAL_S", "10")),
        "unacked_restore_throttle": 1,
    },
    result_backend_transport_options={"visibility_timeout": limits.visibility_timeout_s()},
    beat_schedule={
        "reap-stale-runs": {"task": "catalogue.tasks.reap_stale_runs", "schedule": 60.0},
        # the cone search reads each galaxy's stored catalogue choice while it is current
        "refresh-catalogue-choices": {"task": "catalogue.tasks.refresh_catalogue_choices", "schedule": 60.0},
    },
    worker_prefetch_multiplier=1,
    task_track_started=True,
    result_expires=7 * 24 * 3600,
    broker_connection_retry_on_startup=True,
    task_eager_propagates=True,
)
app.autodiscover_tasks(["catalogue"])
