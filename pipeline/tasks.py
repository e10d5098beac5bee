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
