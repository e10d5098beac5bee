"""The reaper: no run stays ``running`` after its workers are gone.

Celery beat calls :func:`reap_stale_runs` every minute (task ``catalogue.tasks.reap_stale_runs``).
Liveness comes from heartbeats, not from time limits: every chunk in a worker's hands
beats every 30 s from a thread of its own (:class:`catalogue.services.runs.Heartbeat`),
however long its body's current step takes, so a chunk whose heartbeat stopped for three
minutes (:func:`catalogue.limits.heartbeat_silence_s`) has lost its worker. The reaper
hands it to another worker, which goes on from what the ledger says is done; time
limits stay as the bound on runaway work.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone

from catalogue import limits, registry
from catalogue.models import Run, RunChunk
from catalogue.services import runs

log = logging.getLogger(__name__)


def reap_stale_runs(now: datetime | None = None) -> list[int]:
    """Deal with active runs whose workers went silent; returns the runs it failed.

    * A chunk in a worker's hands whose heartbeat stopped for the silence limit lost its
      worker: it is handed to another worker (queued again under a fresh task id), which
      claims it as a redelivery and goes one item at a time. Once the chunk has been
      delivered :data:`~catalogue.services.runs.MAX_CHUNK_ATTEMPTS` times, the run fails
      with that reason instead, so nothing loops forever.
    * A run none of whose chunks a worker has taken for the queue-wait limit: no worker
      listens on its queue, and the run fails saying so.
    """
    now = now or timezone.now()
    silence_s = limits.heartbeat_silence_s()
    cutoff = now - timedelta(seconds=silence_s)
    failed = []
    # A workflow has no chunks of its own: its stages are reaped, and it follows them.
    active = Run.objects.filter(status__in=Run.ACTIVE).exclude(stage=registry.WORKFLOW)
    for run in active.annotate(last_chunk=Max("chunks__heartbeat")):
        stage = registry.stage(run.stage)
        running = list(RunChunk.objects.filter(run=run, state=RunChunk.State.RUNNING))
        lost = [c for c in running if (c.heartbeat or c.started or run.created) < cutoff]
        spent = [c for c in lost if c.attempts >= runs.MAX_CHUNK_ATTEMPTS]
        last = max(t for t in (run.heartbeat, run.last_chunk, run.created) if t is not None)
        if spent:
            reason = (
                f"chunk {spent[0].index} lost its worker on each of its {spent[0].attempts} deliveries (no heartbeat "
                f"for {silence_s:.0f} s); start the stage again to continue where it stopped"
            )
        elif lost:
            _hand_out_again(run, stage, lost, silence_s)
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
            failed.append(run.pk)
            log.warning("reaped run %s: %s", run.pk, reason)
    return failed


def _hand_out_again(run: Run, stage: registry.Stage, chunks: list[RunChunk], silence_s: float) -> None:
    """Queue silent chunks again under fresh task ids; the ledger makes a late original harmless."""
    from catalogue.celery import app

    task = app.tasks[stage.task_name]
    for chunk in chunks:
        task_id = str(uuid.uuid4())
        note = f"handed out again: no heartbeat from {chunk.worker or 'its worker'} for {silence_s:.0f} s"
        RunChunk.objects.filter(pk=chunk.pk, state=RunChunk.State.RUNNING).update(
            state=RunChunk.State.QUEUED, task_id=task_id, heartbeat=timezone.now(), error=note[:300]
        )
        log.warning("run %s: chunk %s silent, handed out again", run.pk, chunk.index)
        task.apply_async(args=[chunk.pk], task_id=task_id)
