"""The reaper: the database's ledger decides what is owed, and nothing stays ``running`` with nothing behind it.

Celery beat calls :func:`reap_stale_runs` every minute (task ``catalogue.tasks.reap_stale_runs``).
Liveness comes from heartbeats, not from time limits: every chunk in a worker's hands
beats every 30 s from a thread of its own (:class:`catalogue.services.runs.Heartbeat`),
however long its body's current step takes, so a chunk whose heartbeat stopped for three
minutes (:func:`catalogue.limits.heartbeat_silence_s`) has lost its worker. The reaper
hands it to another worker, which goes on from what the ledger says is done; time
limits stay as the bound on runaway work.

The broker is only the doorbell: a queued chunk that no worker claimed a while after its
message was sent (:func:`catalogue.limits.resend_after_s`) is sent again, so a message
lost with a broker that kept nothing on disk, or refused while it was down, costs minutes.
Workflows are watched too: one with no active stage for
:func:`catalogue.limits.workflow_stall_s` lost its boundary to an outage and is moved on.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db.models import Max
from django.db.models.functions import Now

from catalogue import limits, registry
from catalogue.models import Run, RunChunk
from catalogue.orchestration import workflow
from catalogue.selectors.clock import database_now
from catalogue.services import runs

log = logging.getLogger(__name__)


def reap_stale_runs(now: datetime | None = None, consumed_here: tuple[str, ...] = ()) -> list[int]:
    """Deal with active runs whose workers went silent or whose messages were lost; returns the runs it failed.

    * A chunk in a worker's hands whose heartbeat stopped for the silence limit lost its
      worker: it is handed to another worker (queued again under a fresh task id), which
      claims it as a redelivery and goes one item at a time. Once the chunk has been
      delivered :data:`~catalogue.services.runs.MAX_CHUNK_ATTEMPTS` times, the run fails
      with that reason instead, so nothing loops forever.
    * A queued chunk no worker claimed for the resend wait is sent again (under a fresh task id).
    * A run none of whose chunks a worker has taken for the queue-wait limit fails, saying
      so, when no worker listens on its queue: a busy queue is no reason.
    * An active workflow with no active stage for the stall limit is moved on (or ended as
      its last stage ended); a stage whose workflow has ended is cancelled.

    ``consumed_here``: the queues of the worker running the reaper, which cannot answer the
    question of who consumes what while it is busy reaping (a solo pool).
    """
    now = now or database_now()
    silence_s = limits.heartbeat_silence_s()
    cutoff = now - timedelta(seconds=silence_s)
    failed = []
    listening = _QueuesListenedTo(consumed_here)
    # A workflow has no chunks of its own: its stages are reaped, and it is watched below.
    active = Run.objects.filter(status__in=Run.ACTIVE).exclude(stage=registry.WORKFLOW)
    for run in active.annotate(last_chunk=Max("chunks__heartbeat")):
        stage = registry.stage(run.stage)
        running = list(RunChunk.objects.filter(run=run, state=RunChunk.State.RUNNING))
        lost = [c for c in running if (c.heartbeat or c.started or run.created) < cutoff]
        spent = [c for c in lost if c.attempts >= runs.MAX_CHUNK_ATTEMPTS]
        last = max(t for t in (run.heartbeat, run.last_chunk, run.created) if t is not None)
        waited = (now - last).total_seconds()
        if spent:
            reason = (
                f"chunk {spent[0].index} lost its worker on each of its {spent[0].attempts} deliveries (no heartbeat "
                f"for {silence_s:.0f} s); start the stage again to continue where it stopped"
            )
        elif lost:
            _hand_out_again(run, stage, lost, silence_s)
            continue
        elif not running and waited > limits.queue_wait_limit_s() and not listening(stage.queue):
            reason = f"no worker took a chunk for {waited:.0f} s: is a worker listening on the {stage.queue} queue?"
        else:
            _send_unclaimed_again(run, stage, now)
            continue
        if runs.fail_run(run.pk, reason):
            RunChunk.objects.filter(run=run, state=RunChunk.State.RUNNING).update(
                state=RunChunk.State.FAILED, error="worker lost", finished=now
            )
            failed.append(run.pk)
            log.warning("reaped run %s: %s", run.pk, reason)
    _watch_workflows(now)
    return failed


class _QueuesListenedTo:
    """Whether some worker consumes from a queue: asked of the workers once, and only when needed."""

    def __init__(self, consumed_here: tuple[str, ...] = ()):
        self._queues: set[str] | None = None
        self._here = set(consumed_here)

    def __call__(self, queue: str) -> bool:
        if queue in self._here:
            return True
        if self._queues is None:
            from catalogue.celery import app

            try:
                replies = app.control.inspect(timeout=2.0).active_queues() or {}
            except Exception as exc:  # the broker away: no way to know, so assume someone listens
                log.warning("could not ask the workers which queues they consume: %s", exc)
                return True
            self._queues = {q["name"] for queues in replies.values() for q in queues}
        return queue in self._queues


def _hand_out_again(run: Run, stage: registry.Stage, chunks: list[RunChunk], silence_s: float) -> None:
    """Queue silent chunks again under fresh task ids; the ledger makes a late original harmless."""
    resent = []
    for chunk in chunks:
        task_id = str(uuid.uuid4())
        note = f"handed out again: no heartbeat from {chunk.worker or 'its worker'} for {silence_s:.0f} s"
        if RunChunk.objects.filter(pk=chunk.pk, state=RunChunk.State.RUNNING).update(
            state=RunChunk.State.QUEUED, task_id=task_id, heartbeat=Now(), error=note[:300]
        ):
            resent.append((chunk.pk, task_id))
        log.warning("run %s: chunk %s silent, handed out again", run.pk, chunk.index)
    runs.send_chunks(stage.task_name, resent)


def _send_unclaimed_again(run: Run, stage: registry.Stage, now: datetime) -> None:
    """Send again the queued chunks of a run that no worker claimed within the resend wait.

    The wait counts from the chunk's last send (or, never sent, from the run's start): a
    message the broker lost, or refused while it was down, is owed all the same.
    """
    since_run = run.started or run.created
    queued = RunChunk.objects.filter(run=run, state=RunChunk.State.QUEUED).values_list("pk", "sent", "sends", "index")
    due = [
        (pk, index)
        for pk, sent, sends, index in queued
        if (now - (sent or since_run)).total_seconds() > limits.resend_after_s(sends)
    ]
    if not due:
        return
    fresh = []
    for pk, _ in due:
        task_id = str(uuid.uuid4())
        if RunChunk.objects.filter(pk=pk, state=RunChunk.State.QUEUED).update(task_id=task_id):
            fresh.append((pk, task_id))
    sent = runs.send_chunks(stage.task_name, fresh)
    log.warning("run %s: %d of %d unclaimed chunk(s) sent again (first: chunk %s)", run.pk, sent, len(due), due[0][1])


def _watch_workflows(now: datetime) -> None:
    """Move on the workflows whose boundary an outage swallowed, and end stages that outlived their workflow."""
    for orphan in workflow.orphaned_stages():
        log.warning("run %s outlived its workflow %s: cancelled", orphan.pk, orphan.parent_id)
        runs.cancel_run(orphan)
    stall_s = limits.workflow_stall_s()
    for parent in Run.objects.filter(stage=registry.WORKFLOW, status__in=Run.ACTIVE):
        if parent.children.filter(status__in=Run.ACTIVE).exists():
            continue
        ended = parent.children.aggregate(last=Max("finished"))["last"]
        quiet_since = max(t for t in (ended, parent.heartbeat, parent.created) if t is not None)
        if (now - quiet_since).total_seconds() > stall_s:
            log.warning(
                "workflow %s had no active stage for %.0f s: moving it on", parent.pk, (now - quiet_since).total_seconds()
            )
            workflow.resume(parent)
