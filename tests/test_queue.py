"""The task queue for real: Redis broker, one worker per queue, results back."""

from __future__ import annotations

import pytest

from catalogue.celery import app
from catalogue.tasks import gpu_worker_info, worker_info
from tests.services import unreachable_reason

pytestmark = pytest.mark.services


def test_routes_send_tasks_to_their_queues():
    router = app.amqp.router
    assert router.route({}, "catalogue.tasks.worker_info")["queue"].name == "cpu"
    assert router.route({}, "catalogue.tasks.gpu_worker_info")["queue"].name == "gpu"


def test_real_workers_run_each_queue_and_return_results(celery_workers):
    cpu = worker_info.apply_async().get(timeout=60)
    gpu = gpu_worker_info.apply_async().get(timeout=60)
    assert cpu["hostname"] == celery_workers["cpu"]
    assert cpu["queue"] == "cpu"
    assert gpu["hostname"] == celery_workers["gpu"]
    assert gpu["queue"] == "gpu"


def test_unreachable_service_is_reported():
    assert unreachable_reason("redis://127.0.0.1:1/0") is not None
