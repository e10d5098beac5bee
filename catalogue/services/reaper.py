"""The reaper: no run stays ``running`` after its workers are gone.

Celery beat calls :func:`reap_stale_runs` every minute (task ``catalogue.tasks.reap_stale_runs``).
How long a chunk may stay silent comes from its stage's time-limit kind in the registry
(:mod:`catalogue.registry`): a training stage (cnn, gbm, experiments) may spend its
whole training limit between two heartbeats, a per-galaxy chunk only the chunk limit.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone

from catalogue import limits, registry
from catalogue.models import Run, RunChunk, RunStage
from catalogue.services import runs

log = logging.getLogger(__name__)


def reap_stale_runs(now: datetime | None = None) -> list[int]:
    """Deal with active runs whose workers went silent; returns the runs it failed.

    * A chunk in a worker's hands silent for longer than its stage's hard limit (plus a
      grace period) while nothing else of its run has reported either: the run's workers
      were lost, and the run fails with that reason.
    * Such a chunk while the rest of the run still progresses on other workers: the chunk
      is handed out again (a worker claims it as lost and goes one item at a time),
      instead of waiting hours for the broker's visibility timeout.
    * A run none of whose chunks was ever taken, silent for the queue-wait limit: no
      worker listens on its queue, and the run fails saying so.
    """
    now = now or timezone.now()
    reaped = []
    # A workflow has no chunks of its own: its stages are reaped, and it follows them.
    active = Run.objects.filter(status__in=Run.ACTIVE).exclude(stage=RunStage.WORKFLOW)
    for run in active.annotate(last_chunk=Max("chunks__heartbeat")):
        stage = registry.stage(run.stage)
        last = max(t for t in (run.heartbeat, run.last_chunk, run.created) if t is not None)
        silence = limits.silence_limit_s(stage.limit)
        cutoff = now - timedelta(seconds=silence)
        running = list(RunChunk.objects.filter(run=run, state=RunChunk.State.RUNNING))
        lost = [c for c in running if (c.heartbeat or c.started or run.created) < cutoff]
        if lost and last < cutoff:
            reason = (
                f"no worker reported for {(now - last).total_seconds():.0f} s (hard limit {silence:.0f} s): the workers "
                f"were lost; start the stage again to continue where it stopped"
            )
        elif lost:
            _hand_out_again(run, stage, lost)
            continue
        elif not running and (now - last).total_seconds() > limits.queue_wait_limit_s():
            waited = (now - last).total_seconds()
            reason = f"no worker took a chunk for {waited:.0f} s: is a worker listening on the {stage.queue} queue?"
        else:
            continue
        if runs.fail_run(run.pk, reason):
            RunChunk.objects.filter(run=run, state=RunChunk.State.RUNNING).update(
                state=RunChunk.State.FAILED, error="worker lost", finished=now
            )
            reaped.append(run.pk)
            log.warning("reaped run %s: %s", run.pk, reason)
    return reaped


def _hand_out_again(run: Run, stage: registry.Stage, chunks: list[RunChunk]) -> None:
    """Send silent chunks again under fresh task ids; the ledger makes a late original harmless."""
    from catalogue.celery import app

    task = app.tasks[stage.task_name]
    for chunk in chunks:
        task_id = str(uuid.uuid4())
        RunChunk.objects.filter(pk=chunk.pk).update(task_id=task_id, error="handed out again: its worker went silent")
        log.warning("run %s: chunk %s silent, handed out again", run.pk, chunk.index)
        task.apply_async(args=[chunk.pk], task_id=task_id)
