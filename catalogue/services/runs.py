"""The run engine: every stage's long work as a :class:`Run` with a ledger of chunks.

A stage plans its items into chunks when the run is created (:func:`create_run`), and its
chunk task hands each chunk to :func:`execute_chunk` with a *body* that does the work.
The engine owns everything else:

* **At most one active run per survey and stage**, enforced by a partial unique index; a
  second request raises :class:`RunConflict` naming the active run.
* **Enqueued after commit**: chunk tasks are sent only once the transaction that created
  their rows has committed (in-process at once when Celery is eager).
* **The ledger is the truth, the broker only the doorbell**: a chunk records when its
  message reached the broker (``sent``); a send the broker refuses is left unsent, and the
  reaper sends again a queued chunk that no worker claimed for a while (a message lost
  with a broker that kept nothing on disk). Claiming stays at most once: a duplicate
  message finds its chunk taken under another task id and does nothing.
* **Exactly once**: a chunk's results and its ``done`` state are written in one
  transaction, and progress is summed from the ledger, so a redelivered or duplicated
  chunk can never count twice.
* **Poison items**: a chunk delivered again after its worker died is processed one item
  at a time, recording the item in hand; an item on which the worker dies
  :data:`MAX_ITEM_CRASHES` times is failed with the reason, and a chunk is given up after
  :data:`MAX_CHUNK_ATTEMPTS` deliveries, so nothing loops forever.
* **Cancellation** is checked between items. **Heartbeats**: a worker's chunk beats from
  a thread of its own (:class:`Heartbeat`) while its body works, however long one step
  takes, and the periodic reaper (:mod:`catalogue.orchestration.reaper`) hands a chunk whose
  heartbeat stopped to another worker.
* **Finish listeners**: whoever builds on runs (the workflow) registers a function in
  :data:`finish_listeners`, called whenever a run ends, so this module imports nothing
  that builds on it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Now
from kombu.exceptions import OperationalError as BrokerError

from catalogue import failure_reasons, limits, registry
from catalogue.models import Run, RunChunk, Survey
from catalogue.selectors.clock import database_now
from catalogue.services import faults

log = logging.getLogger(__name__)

#: Deliveries of one chunk before it is given up (its unfinished items fail).
MAX_CHUNK_ATTEMPTS = 5
#: Times a worker may die on one item before the item is failed.
MAX_ITEM_CRASHES = 2
#: Seconds between a chunk's heartbeat / cancellation checks.
CHECK_INTERVAL_S = 1.0


#: Errors of a service gone away for a while (the database, the broker): worth waiting out, never a
#: reason to fail a run, whose ledger says what is still owed once the service is back.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, BrokerError)


#: Called with a run's id whenever this process changes the run's progress or state: how
#: the CLI draws progress while Celery runs the stages in this very process (no workers).
progress_listeners: list[Callable[[int], None]] = []


#: Called with a run's id whenever a run ends (any final state), after it is saved: how a
#: workflow moves on to its next stage (registered by ``CatalogueConfig.ready``).
finish_listeners: list[Callable[[int], None]] = []


def _notify(run_id: int) -> None:
    for listener in list(progress_listeners):
        try:
            listener(run_id)
        except Exception:  # a display must never break the work it shows
            log.exception("progress listener failed")


class RunConflict(RuntimeError):
    """A run of the same stage is already active on the survey."""

    def __init__(self, active: Run):
        self.active = active
        super().__init__(
            f"run #{active.pk} ({active.stage}, {active.status}) is already active on survey "
            f"{active.survey.name if active.survey else '-'}: wait for it or cancel it first"
        )


class RunCancelled(Exception):
    """Raised inside a chunk body when its run was cancelled or has ended."""


def active_run(survey: Survey | None, stage: str) -> Run | None:
    """The run of ``stage`` active on the survey, if any."""
    return Run.objects.filter(survey=survey, stage=stage, status__in=Run.ACTIVE).select_related("survey").first()


def active_root(survey: Survey | None) -> Run | None:
    """The workflow or lone stage active on the survey, if any (a workflow's stage: its workflow, while
    that is active; a stage whose workflow has ended is named itself, so a refusal names what is active)."""
    run = Run.objects.filter(survey=survey, status__in=Run.ACTIVE).select_related("survey", "parent").order_by("created").first()
    if run is None:
        return None
    return run.parent if run.parent is not None and run.parent.status in Run.ACTIVE else run


def seed_of(run: Run) -> int:
    """The run's random seed: recorded at its start from what it is (runs recorded before seeds: its id)."""
    return int(run.config.get("seed", run.pk))


#: A chunk item: a galaxy id, or the name of what the chunk holds (a network's role, a
#: named model, an experiment), never a position in a list that may change.
Item = int | str


def create_run(
    stage: str,
    survey: Survey | None,
    chunks: Sequence[Sequence[Item]],
    *,
    preset: str = "",
    resolutions: Sequence[int] = (),
    config: dict | None = None,
    user=None,
    parent: Run | None = None,
    prepare: Callable[[Run], None] | None = None,
    task_id: str = "",
    status: str = Run.Status.QUEUED,
) -> Run:
    """Create a run with its chunk ledger in one transaction.

    ``prepare(run)`` runs inside the same transaction (a stage allocates what its chunks
    will write). The caller enqueues the chunks with :func:`enqueue_chunks` after this
    returns. A run without chunks succeeds at once ("nothing to do"), unless it is
    created ``running`` (a workflow, whose stages are runs of their own).

    Raises
    ------
    RunConflict
        when a run of this stage is already active on the survey, or (for a run without
        a parent) any workflow or lone stage: the database refuses the second.
    """
    total = sum(len(c) for c in chunks)
    now = database_now() if status == Run.Status.RUNNING else None
    try:
        with transaction.atomic():
            run = Run.objects.create(
                stage=stage,
                survey=survey,
                preset=preset,
                resolutions=[int(r) for r in resolutions],
                config=config or {},
                started_by=user,
                parent=parent,
                items_total=total,
                celery_task_id=task_id,
                message=f"{total} items queued in {len(chunks)} chunks" if chunks else "nothing to do",
                status=status,
                started=now,
                heartbeat=now,
            )
            ledger = [RunChunk(run=run, index=i, items=_items(c), task_id=str(uuid.uuid4())) for i, c in enumerate(chunks)]
            RunChunk.objects.bulk_create(ledger, batch_size=2000)
            if prepare is not None:
                prepare(run)
                run.refresh_from_db()
    except IntegrityError:
        active = active_run(survey, stage) or (active_root(survey) if parent is None else None)
        if active is None:
            raise
        raise RunConflict(active) from None
    if not chunks and status == Run.Status.QUEUED:
        _finish(run.pk, Run.Status.SUCCEEDED, "nothing to do")
        run.refresh_from_db()
    return run


def _items(items: Sequence[Item]) -> list[Item]:
    """A chunk's items as stored: galaxy ids as ints, names as strings."""
    return [item if isinstance(item, str) else int(item) for item in items]


def enqueue_chunks(run: Run, task_name: str) -> None:
    """Send one ``task_name(chunk_id)`` per queued chunk, once the surrounding transaction commits.

    Tasks are named, not imported, so services and task modules never import each other
    (``CatalogueConfig.ready`` registers the tasks in every process). With eager Celery
    (the embedded demo, most tests) the chunks run here, in-process. The run is marked
    running first: should the broker refuse the messages, the reaper sends them later.
    """
    from catalogue.celery import app

    chunk_ids = list(RunChunk.objects.filter(run=run, state=RunChunk.State.QUEUED).values_list("pk", "task_id"))
    if not chunk_ids:
        return

    def send() -> None:
        Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(status=Run.Status.RUNNING, started=Now(), heartbeat=Now())
        send_chunks(task_name, chunk_ids)

    if app.conf.task_always_eager:
        send()
    else:
        transaction.on_commit(send)


def send_chunks(task_name: str, chunks: Sequence[tuple[int, str]]) -> int:
    """Send ``task_name(chunk_id)`` under each chunk's task id and record the sends; returns how many went.

    Stops at the first message the broker refuses (it is down: the rest would fail too) and
    leaves the unsent chunks queued in the ledger, for the reaper to send once it is back.
    """
    from catalogue.celery import app

    task = app.tasks[task_name]
    sent: list[int] = []
    try:
        for pk, task_id in chunks:
            task.apply_async(args=[pk], task_id=task_id)
            sent.append(pk)
    except BrokerError as exc:
        log.warning(
            "the broker refused %d chunk message(s) of %s (%s): the reaper sends them later",
            len(chunks) - len(sent),
            task_name,
            exc,
        )
    finally:
        if sent:
            RunChunk.objects.filter(pk__in=sent).update(sent=Now(), sends=F("sends") + 1)
    return len(sent)


@dataclass
class ChunkClaim:
    """What a worker got when it took a chunk."""

    chunk: RunChunk
    run: Run
    careful: bool  # redelivered: process one item at a time, recording the item in hand
    poisoned: dict[Item, int] = field(default_factory=dict)  # item -> crashes, to be failed, not processed

    @property
    def items(self) -> list[Item]:
        return _items(self.chunk.items)


def claim_chunk(chunk_id: int, worker: str, task_id: str = "") -> ChunkClaim | None:
    """Take a chunk for processing; None when there is nothing to do (run over, chunk finished, taken).

    Each claim counts an attempt. A chunk claimed under its own task id while the ledger
    says it is running was lost by a worker that died (the broker redelivered it, or the
    task retried): if the ledger names the item in hand, that item's crash count goes up.
    A message under another task id is a duplicate of one sent again (:func:`send_chunks`):
    the first to arrive takes a queued chunk, and any other finds it taken and does nothing.
    """
    now = database_now()
    with transaction.atomic():
        chunk = RunChunk.objects.select_for_update().get(pk=chunk_id)
        run = Run.objects.select_for_update(of=("self",)).select_related("survey").get(pk=chunk.run_id)
        if chunk.state in RunChunk.TERMINAL:
            return None
        if task_id and task_id != chunk.task_id:
            if chunk.state != RunChunk.State.QUEUED:
                return None  # a duplicate: the chunk is in another message's hands
            chunk.task_id = task_id
        if run.status not in Run.ACTIVE:
            chunk.state, chunk.finished = RunChunk.State.CANCELLED, now
            chunk.error = chunk.error or f"run ended ({run.status}) before this chunk ran"
            chunk.save(update_fields=["state", "finished", "error"])
            return None
        lost = chunk.state == RunChunk.State.RUNNING
        if chunk.current_item is not None:
            key = str(chunk.current_item)
            chunk.item_crashes = {**chunk.item_crashes, key: chunk.item_crashes.get(key, 0) + 1}
            chunk.current_item = None
        chunk.attempts += 1
        chunk.state, chunk.worker, chunk.started, chunk.heartbeat = RunChunk.State.RUNNING, worker, now, now
        chunk.save()
        if run.status == Run.Status.QUEUED:
            run.status, run.started = Run.Status.RUNNING, now
        run.heartbeat = now
        run.save(update_fields=["status", "started", "heartbeat"])
    if lost:
        log.warning("chunk %s of run %s redelivered (attempt %d)", chunk.index, run.pk, chunk.attempts)
    poisoned = {int(k) if k.lstrip("-").isdigit() else k: n for k, n in chunk.item_crashes.items() if n >= MAX_ITEM_CRASHES}
    return ChunkClaim(chunk=chunk, run=run, careful=chunk.attempts > 1, poisoned=poisoned)


class ChunkContext:
    """Given to a chunk body: heartbeats, cancellation checks and the item in hand."""

    def __init__(self, claim: ChunkClaim):
        self.claim = claim
        self._last_check = time.monotonic()

    def check(self, force: bool = False) -> None:
        """Heartbeat and cancellation check, at most every :data:`CHECK_INTERVAL_S`.

        Raises
        ------
        RunCancelled
            when the run was cancelled (or has otherwise ended) meanwhile.
        """
        if not force and time.monotonic() - self._last_check < CHECK_INTERVAL_S:
            return
        self._last_check = time.monotonic()
        RunChunk.objects.filter(pk=self.claim.chunk.pk).update(heartbeat=Now())
        still = Run.objects.filter(pk=self.claim.run.pk, status__in=Run.ACTIVE).update(heartbeat=Now())
        if not still:
            raise RunCancelled(f"run #{self.claim.run.pk} is no longer active")

    def holding(self, item: int | None) -> None:
        """Record (committed at once) the item being processed, in careful mode."""
        RunChunk.objects.filter(pk=self.claim.chunk.pk).update(current_item=item, heartbeat=Now())


def report_progress(run_id: int, fraction: float, message: str, done: int | None = None) -> None:
    """Show a single-chunk stage's progress within its chunk (the ledger counts only whole chunks).

    ``done``: the steps stored so far (models, experiments), so that a run cancelled or
    lost half-way says how much it did; the ledger's count replaces it when the chunk ends.
    """
    counts = {} if done is None else {"items_done": done}
    Run.objects.filter(pk=run_id, status__in=Run.ACTIVE).update(
        progress=min(0.999, max(0.0, fraction)), message=message[:300], heartbeat=Now(), **counts
    )
    _notify(run_id)


class Heartbeat:
    """Beats for a chunk in a worker from a thread of its own, every ``interval_s``, while the body works.

    Liveness that does not depend on the body: a model fit that reports nothing for an
    hour still beats, and a worker that dies stops beating at once. Used as a context
    manager around the body; the thread has its own database connection, closed when it stops.
    """

    def __init__(self, chunk_id: int, run_id: int, interval_s: float):
        self.chunk_id, self.run_id, self.interval_s = chunk_id, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-chunk-{chunk_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval_s))

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    RunChunk.objects.filter(pk=self.chunk_id, state=RunChunk.State.RUNNING).update(heartbeat=Now())
                    Run.objects.filter(pk=self.run_id, status__in=Run.ACTIVE).update(heartbeat=Now())
                except Exception as exc:  # the database away for a moment: the next beat tries again
                    log.warning("heartbeat of chunk %s failed: %s", self.chunk_id, exc)
                    connection.close()
        finally:
            connection.close()


@dataclass
class ChunkOutcome:
    """What a body reports: how many items succeeded and failed, and why they failed (reason -> how many)."""

    done: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


#: body(claim, context) -> ChunkOutcome. The body saves its results and calls
#: :func:`complete_chunk` in the same transaction.
ChunkBody = Callable[[ChunkClaim, ChunkContext], ChunkOutcome]


@dataclass(frozen=True)
class StageHooks:
    """What a stage adds to the engine.

    ``body(claim, context) -> ChunkOutcome`` does a chunk's work; it saves its results
    idempotently and calls :func:`complete_chunk` in the same transaction.
    ``on_give_up(claim, reason) -> ChunkOutcome`` records the unfinished items of a chunk
    the engine gave up on as failed. ``on_finish(run) -> dict`` adds to a finished run's result.
    """

    body: ChunkBody
    on_give_up: Callable[[ChunkClaim, str], ChunkOutcome] | None = None
    on_finish: Callable[[Run], dict] | None = None


@dataclass
class Plan:
    """What a stage's ``plan`` returns: the run's chunks and what the run records.

    ``prepare(run)`` runs in the transaction that creates the run (a stage allocates what
    its chunks will write); ``idle_message`` replaces "nothing to do" when there are no chunks.
    """

    chunks: list[list[Item]]
    config: dict = field(default_factory=dict)
    resolutions: tuple[int, ...] = ()
    prepare: Callable[[Run], None] | None = None
    idle_message: str = ""


def execute_chunk(chunk_id: int, worker: str, stage: StageHooks, heartbeat_s: float | None = None, task_id: str = "") -> dict:
    """Claim a chunk, run the stage's body on it and settle the ledger; returns a summary for logs.

    ``heartbeat_s``: beat from a :class:`Heartbeat` thread this often while the body works
    (a worker's tasks; None in-process, where no worker can be lost). ``task_id``: the
    message's, so a duplicate finds its chunk taken (:func:`claim_chunk`). Exceptions other
    than cancellation and lost services fail the run with the traceback.
    """
    claim = claim_chunk(chunk_id, worker, task_id)
    if claim is None:
        return {"chunk": chunk_id, "skipped": True}
    if claim.chunk.attempts > MAX_CHUNK_ATTEMPTS:
        reason = f"given up after {claim.chunk.attempts - 1} deliveries: the worker died each time"
        return {"chunk": chunk_id, "gave_up": True, **_settle(claim, RunChunk.State.FAILED, reason, stage)}
    context = ChunkContext(claim)
    started = time.monotonic()
    try:
        with Heartbeat(claim.chunk.pk, claim.run.pk, heartbeat_s) if heartbeat_s else _no_heartbeat():
            faults.before_chunk(claim.run.stage)
            outcome = stage.body(claim, context)
    except RunCancelled as exc:
        _settle(claim, RunChunk.State.CANCELLED, str(exc), stage)
        return {"chunk": chunk_id, "cancelled": True}
    except TRANSIENT_ERRORS:
        raise  # transient: the task retries with backoff and claims the chunk again
    except Exception as exc:
        fail_run(claim.run.pk, exc, where=f"chunk {claim.chunk.index}")
        raise
    log.info("chunk %s of run %s: %s in %.1f s", claim.chunk.index, claim.run.pk, outcome, time.monotonic() - started)
    refresh_run(claim.run.pk, stage.on_finish)
    return {"chunk": chunk_id, "done": outcome.done, "failed": outcome.failed}


@contextmanager
def _no_heartbeat():
    yield


def complete_chunk(claim: ChunkClaim, outcome: ChunkOutcome) -> None:
    """Mark a chunk done with its counts; call inside the transaction that saves its results.

    Only the first completion counts: a duplicate delivery finds the chunk done and
    changes nothing (the ledger row is locked for the check).
    """
    chunk = RunChunk.objects.select_for_update().get(pk=claim.chunk.pk)
    if chunk.state in RunChunk.TERMINAL:
        return
    now = database_now()
    chunk.state, chunk.n_done, chunk.n_failed = RunChunk.State.DONE, outcome.done, outcome.failed
    chunk.failure_reasons = outcome.reasons
    chunk.finished, chunk.current_item, chunk.heartbeat = now, None, now
    chunk.duration_s = (now - chunk.started).total_seconds() if chunk.started else None
    chunk.save()


def _settle(claim: ChunkClaim, state: str, reason: str, stage: StageHooks) -> dict:
    """End a chunk that did not complete normally (given up, cancelled); its items count as failed when given up."""
    with transaction.atomic():
        chunk = RunChunk.objects.select_for_update().get(pk=claim.chunk.pk)
        if chunk.state in RunChunk.TERMINAL:
            return {}
        chunk.state, chunk.error, chunk.finished = state, reason, database_now()
        chunk.current_item = None
        if state == RunChunk.State.FAILED:
            hook = stage.on_give_up
            outcome = hook(claim, reason) if hook is not None else ChunkOutcome(failed=len(chunk.items))
            chunk.n_done, chunk.n_failed = outcome.done, outcome.failed
            chunk.failure_reasons = outcome.reasons or ({reason: outcome.failed} if outcome.failed else {})
        chunk.save()
    refresh_run(claim.run.pk, stage.on_finish)
    return {"state": state, "reason": reason}


def refresh_run(run_id: int, on_finish: Callable[[Run], dict] | None = None) -> Run:
    """Recompute progress from the ledger; finish the run once every chunk is settled."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        counts = RunChunk.objects.filter(run=run).aggregate(
            done=Sum("n_done"),
            failed=Sum("n_failed"),
            chunks=Count("id"),
            settled=Count("id", filter=Q(state__in=RunChunk.TERMINAL)),
            cancelled=Count("id", filter=Q(state=RunChunk.State.CANCELLED)),
        )
        run.items_done, run.items_failed = counts["done"] or 0, counts["failed"] or 0
        handled = run.items_done + run.items_failed
        run.progress = min(1.0, handled / run.items_total) if run.items_total else 1.0
        run.heartbeat = database_now()
        if run.status in Run.ACTIVE:
            run.message = f"{handled} of {run.items_total} handled: {run.items_done} done, {run.items_failed} failed"
        finishing = run.status == Run.Status.RUNNING and counts["settled"] == counts["chunks"]
        run.save(update_fields=["items_done", "items_failed", "progress", "heartbeat", "message"])
    if finishing:
        extra = on_finish(run) if on_finish is not None else {}
        result = {"done": run.items_done, "failed": run.items_failed, **extra}
        too_many = _too_many_failed(run)
        if too_many:
            _finish(run.pk, Run.Status.FAILED, too_many, result=result, error=too_many)
        else:
            _finish(run.pk, Run.Status.SUCCEEDED, run.message, result=result)
        run.refresh_from_db()
    else:
        _notify(run_id)
    return run


def _too_many_failed(run: Run) -> str:
    """Why the run fails for its failed items (more than :func:`~catalogue.limits.max_failed_share` of those
    handled), naming the commonest reasons; empty when few enough failed. A stage whose every item
    failed has nothing to hand on, and the next stage's refusal would name the wrong cause."""
    handled = run.items_done + run.items_failed
    share = limits.max_failed_share()
    if not handled or run.items_failed <= share * handled:
        return ""
    recorded = RunChunk.objects.filter(run=run, n_failed__gt=0).values_list("failure_reasons", flat=True)
    reasons = failure_reasons.commonest(pair for counts in recorded for pair in counts.items())
    return f"{run.items_failed} of {handled} items failed (more than {share:.0%}): {reasons}"


def _finish(run_id: int, status: str, message: str, *, result: dict | None = None, error: str = "") -> bool:
    """Move an active run to a final state (only from an active one); returns whether it did."""
    now = database_now()
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status not in Run.ACTIVE:
            return False
        run.status, run.message, run.finished = status, message[:300], now
        run.started = run.started or now
        if status == Run.Status.SUCCEEDED:
            run.progress = 1.0
        if result is not None:
            run.result = {**run.result, **result}
        if error:
            run.error = error
            run.log = (run.log + error)[-20000:]
        run.save()
        if status != Run.Status.SUCCEEDED:
            RunChunk.objects.filter(run=run, state=RunChunk.State.QUEUED).update(
                state=RunChunk.State.CANCELLED, finished=now, error=f"run {status}"
            )
    _notify(run_id)
    for listener in list(finish_listeners):
        listener(run.pk)
    return True


def succeed_run(run_id: int, message: str) -> bool:
    """End an active run as succeeded (a run without chunks of its own, e.g. a workflow)."""
    return _finish(run_id, Run.Status.SUCCEEDED, message)


def fail_run(run_id: int, exc: BaseException | str, where: str = "", details: str = "") -> bool:
    """Fail a run with the exception's traceback (or a reason, and ``details`` such as a failed stage's traceback).

    Returns whether it did (False when the run had already ended).
    """
    if isinstance(exc, BaseException):
        text = "".join(traceback.format_exception(exc))[-10000:]
        summary = f"{type(exc).__name__}: {exc}"
    else:
        text = summary = str(exc)
    prefix = f"{where}: " if where else ""
    error = f"{prefix}{text}" + (f"\n\n{details}"[-10000:] if details else "")
    return _finish(run_id, Run.Status.FAILED, f"{prefix}{summary}", error=error)


def cancel_run(run: Run, user=None) -> bool:
    """Cancel an active run: queued chunks are dropped, running ones stop at the next item.

    Returns False when the run had already ended.
    """
    who = f" by {user}" if user is not None else ""
    done = _finish(run.pk, Run.Status.CANCELLED, f"cancelled{who} after {run.items_done + run.items_failed} items")
    if run.stage == registry.WORKFLOW:  # and the stage it is running
        for child in Run.objects.filter(parent=run, status__in=Run.ACTIVE):
            cancel_run(child, user)
    if done:
        task_ids = list(RunChunk.objects.filter(run=run, state=RunChunk.State.CANCELLED).values_list("task_id", flat=True))
        _revoke(task_ids)
    run.refresh_from_db()
    return done


def _revoke(task_ids: Iterable[str]) -> None:
    """Tell workers to drop these tasks if they see them (best effort: the ledger is the truth)."""
    from catalogue.celery import app

    ids = [t for t in task_ids if t]
    if not ids or app.conf.task_always_eager:
        return
    try:
        app.control.revoke(ids)
    except Exception as exc:  # the broker being down must not stop a cancellation
        log.warning("could not broadcast the revocation of %d tasks: %s", len(ids), exc)
