"""Helpers of the tests that drive runs through real worker processes."""

from __future__ import annotations

import json
import time

import pytest

from catalogue.models import Preprocessed, Run, RunChunk

# Real workers in these tests use short limits: a chunk killed with its worker comes back
# after the visibility timeout, i.e. 1.1 x 8 + 5 = 13.8 s, swept every second.
FAST_REDELIVERY = {
    "MORPHOMASS_TASK_HARD_LIMITS": json.dumps({"chunk": 8, "train": 8, "control": 8}),
    "CELERY_RESTORE_INTERVAL_S": "1",
}


def wait_for(predicate, timeout: float, message: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {message}")


def workers_idle(app, timeout: float) -> None:
    """Wait until every worker answers that it runs no task (a busy solo worker answers nothing)."""

    def idle() -> bool:
        replies = app.control.inspect(timeout=1.0).active()
        return bool(replies) and not any(replies.values())

    wait_for(idle, timeout, "the workers to finish what they run")


def finished(run: Run, timeout: float) -> Run:
    def over():
        run.refresh_from_db()
        return run.status in Run.TERMINAL

    wait_for(over, timeout, f"run #{run.pk} to finish ({run.message})")
    return run


def assert_every_chunk_counted_once(run: Run) -> list:
    """Every chunk done, every item in one chunk only, the run's counts the ledger's; returns the items."""
    chunks = list(RunChunk.objects.filter(run=run))
    items = [i for c in chunks for i in c.items]
    assert len(items) == len(set(items)) == run.items_total, run.stage
    assert all(c.state == "done" and c.n_done + c.n_failed == len(c.items) for c in chunks), run.stage
    assert run.items_done + run.items_failed == run.items_total, run.stage
    return items


def assert_every_galaxy_accounted_once(run: Run) -> None:
    items = assert_every_chunk_counted_once(run)
    results = Preprocessed.objects.filter(galaxy_id__in=items)
    assert results.count() == run.items_total  # one result row per galaxy
    assert results.filter(status="ok").count() == run.items_done
    assert results.filter(status="failed").count() == run.items_failed


def running_chunk(run: Run) -> RunChunk | None:
    return RunChunk.objects.filter(run=run, state="running").first()
