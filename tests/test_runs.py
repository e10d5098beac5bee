"""The run engine: one active run per survey and stage, a chunk ledger that counts once,
poison galaxies bounded, cancellation, the reaper, and recovery from killed workers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalogue import limits
from catalogue.celery import app
from catalogue.models import Galaxy, Preprocessed, Run, RunChunk, Survey
from catalogue.orchestration import reaper
from catalogue.orchestration.stage import start_stage
from catalogue.services import runs
from catalogue.services.ingest import ingest_bundle
from catalogue.stages import preprocess
from catalogue.stages.preprocess import galaxies_to_preprocess
from tests.run_helpers import (
    FAST_REDELIVERY,
    assert_every_galaxy_accounted_once,
    finished,
    running_chunk,
    wait_for,
    workers_idle,
)


@pytest.fixture
def survey(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "runs")
    return Survey.objects.get(name="runs")


# --- the ledger, in-process ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_a_second_active_run_is_refused_naming_the_first(survey):
    first = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    assert first.status == "queued" and first.chunks.count() == 4
    with pytest.raises(runs.RunConflict, match=f"run #{first.pk} \\(preprocess, queued\\) is already active"):
        start_stage("preprocess", survey, resolutions=[48], preset_name="test")
    # The database itself refuses, whoever writes: the same stage, or any other stage started alone ...
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(stage="preprocess", survey=survey, status="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(stage="cnn", survey=survey, status="running")
    runs.cancel_run(first)
    # ... while a workflow's own stage runs beside its workflow.
    workflow = Run.objects.create(stage="workflow", survey=survey, status="running")
    Run.objects.create(stage="cnn", survey=survey, status="running", parent=workflow)
    runs.cancel_run(workflow)
    assert start_stage("preprocess", survey, resolutions=[32], preset_name="test").status == "queued"


@pytest.mark.django_db
def test_chunks_are_sent_only_after_the_run_commits(survey, django_capture_on_commit_callbacks):
    app.conf.task_always_eager = False
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    finally:
        app.conf.task_always_eager = True
    assert len(callbacks) == 1  # one deferred send, nothing sent inside the transaction
    assert run.status == "queued" and not RunChunk.objects.filter(run=run).exclude(state="queued").exists()


@pytest.mark.django_db
def test_a_duplicated_chunk_delivery_counts_once(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    assert run.status == "succeeded"
    before = (run.items_done, run.items_failed)
    chunk = run.chunks.first()
    assert runs.execute_chunk(chunk.pk, "late duplicate", preprocess.HOOKS) == {"chunk": chunk.pk, "skipped": True}
    run.refresh_from_db()
    assert (run.items_done, run.items_failed) == before
    assert_every_galaxy_accounted_once(run)


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_a_galaxy_that_killed_its_worker_twice_is_failed_and_the_rest_done(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=20)
    chunk = run.chunks.get(index=0)
    poison = chunk.items[3]
    # What the ledger holds after the worker died twice while holding this galaxy.
    RunChunk.objects.filter(pk=chunk.pk).update(state="running", attempts=3, current_item=poison, item_crashes={str(poison): 1})
    runs.execute_chunk(chunk.pk, "test", preprocess.HOOKS)
    chunk.refresh_from_db()
    assert chunk.state == "done" and chunk.attempts == 4 and chunk.item_crashes == {str(poison): 2}
    failed = Preprocessed.objects.get(galaxy_id=poison)
    assert failed.status == "failed" and "worker process died 2 times" in failed.error
    galaxy = Galaxy.objects.get(pk=poison)
    assert galaxy.status != "ok" or galaxy.split == ""  # out of the learning sample
    assert chunk.n_failed >= 1 and chunk.n_done + chunk.n_failed == 20
    for other in run.chunks.exclude(pk=chunk.pk):
        runs.execute_chunk(other.pk, "test", preprocess.HOOKS)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert poison in {Galaxy.objects.get(objid=f["objid"]).pk for f in run.result["failures"]}
    assert_every_galaxy_accounted_once(run)


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_a_chunk_that_keeps_dying_is_given_up_and_the_run_completes(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=60)
    chunk = run.chunks.get(index=0)
    RunChunk.objects.filter(pk=chunk.pk).update(state="running", attempts=runs.MAX_CHUNK_ATTEMPTS)
    result = runs.execute_chunk(chunk.pk, "test", preprocess.HOOKS)
    assert result["gave_up"] and "given up after 5 deliveries" in result["reason"]
    chunk.refresh_from_db()
    assert chunk.state == "failed" and chunk.n_failed == len(chunk.items)
    assert chunk.failure_reasons == {result["reason"]: len(chunk.items)}
    assert set(Preprocessed.objects.filter(galaxy_id__in=chunk.items).values_list("status", flat=True)) == {"failed"}
    for other in run.chunks.exclude(pk=chunk.pk):
        runs.execute_chunk(other.pk, "test", preprocess.HOOKS)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.items_failed >= len(chunk.items)  # a third failed: the run goes on
    assert run.items_done + run.items_failed == run.items_total


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_cancelled_run_drops_its_queued_chunks(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    assert runs.cancel_run(run)
    assert run.status == "cancelled" and run.message.startswith("cancelled")
    assert set(run.chunks.values_list("state", flat=True)) == {"cancelled"}
    # A chunk message that still arrives finds its run over and does nothing.
    assert runs.execute_chunk(run.chunks.first().pk, "late", preprocess.HOOKS)["skipped"]
    assert not Preprocessed.objects.filter(run=run).exists()
    assert not runs.cancel_run(run)  # cancelling twice says it had already ended


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_the_reaper_leaves_a_run_waiting_in_a_busy_queue_but_fails_one_nobody_takes(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    assert reaper.reap_stale_runs() == []
    # Hours behind another survey's work is no reason to fail it ...
    after_an_hour = timezone.now() + timedelta(hours=1)
    assert reaper.reap_stale_runs(now=after_an_hour) == []
    # ... but a day with no chunk taken means no worker listens on its queue.
    after_a_day = timezone.now() + timedelta(seconds=limits.queue_wait_limit_s() + 1)
    assert reaper.reap_stale_runs(now=after_a_day) == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and "is a worker listening on the cpu queue?" in run.message and run.error
    assert "reap-stale-runs" in app.conf.beat_schedule


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_the_reaper_hands_out_again_a_chunk_whose_worker_died_while_the_run_goes_on(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    lost, *others = list(run.chunks.order_by("index"))
    long_ago = timezone.now() - timedelta(seconds=limits.heartbeat_silence_s() + 60)
    RunChunk.objects.filter(pk=lost.pk).update(state="running", attempts=1, heartbeat=long_ago, started=long_ago)
    Run.objects.filter(pk=run.pk).update(status="running", heartbeat=timezone.now())  # other workers report
    app.conf.task_always_eager = True  # the chunk handed out again runs here
    assert reaper.reap_stale_runs() == []
    lost.refresh_from_db()
    assert lost.state == "done" and lost.attempts == 2 and "handed out again" in lost.error
    run.refresh_from_db()
    assert run.status == "running"  # its other chunks are still to come


def test_visibility_timeout_exceeds_every_hard_limit(monkeypatch):
    assert limits.visibility_timeout_s() > max(limits.hard_limits().values())
    assert app.conf.broker_transport_options["visibility_timeout"] > limits.limits("chunk").hard_s
    monkeypatch.setenv("MORPHOMASS_TASK_HARD_LIMITS", '{"chunk": 8}')
    assert limits.limits("chunk").hard_s == 8 and limits.limits("chunk").soft_s < 8
    monkeypatch.setenv("MORPHOMASS_TASK_HARD_LIMITS", '{"gpu": 8}')
    with pytest.raises(ValueError, match="unknown kind"):
        limits.hard_limits()


# --- real workers against Redis and PostgreSQL ---------------------------------------


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_and_restarted_finishes_the_run_exactly_once(synthetic_bundle, start_worker):
    ingest_bundle(synthetic_bundle, "killed")
    survey = Survey.objects.get(name="killed")
    env = {**FAST_REDELIVERY, "MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.05})}
    worker = start_worker("cpu", env=env)
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=15)
    wait_for(lambda: RunChunk.objects.filter(run=run, state="done").exists() and running_chunk(run), 60, "a chunk in flight")
    worker.kill()
    lost = running_chunk(run)
    assert lost is not None and lost.attempts == 1
    start_worker("cpu", env=env)
    run = finished(run, 120)
    assert run.status == "succeeded", run.message
    lost.refresh_from_db()
    assert lost.state == "done" and lost.attempts == 2  # redelivered once, processed one galaxy at a time
    assert_every_galaxy_accounted_once(run)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_an_image_that_kills_the_worker_every_time_ends_as_a_failed_galaxy(synthetic_bundle, start_worker):
    ingest_bundle(synthetic_bundle, "poison")
    survey = Survey.objects.get(name="poison")
    poison = Galaxy.objects.get(pk=galaxies_to_preprocess(survey, [32])[25])
    # prefork: the pool replaces a child that died and hands its task back at once.
    crash = {"MORPHOMASS_FAULTS": json.dumps({"crash_objids": [poison.objid]})}
    start_worker("cpu", pool="prefork", env={**FAST_REDELIVERY, **crash})
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=20)
    run = finished(run, 150)
    assert run.status == "succeeded", run.message
    result = Preprocessed.objects.get(galaxy=poison)
    assert result.status == "failed" and "worker process died 2 times" in result.error
    assert {"objid": poison.objid, "reason": result.error} in run.result["failures"]
    chunk = next(c for c in RunChunk.objects.filter(run=run) if poison.pk in c.items)
    assert chunk.attempts == 4 and chunk.item_crashes == {str(poison.pk): 2}
    assert_every_galaxy_accounted_once(run)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_run_stops_its_worker_between_galaxies(synthetic_bundle, start_worker):
    ingest_bundle(synthetic_bundle, "cancel")
    survey = Survey.objects.get(name="cancel")
    start_worker("cpu", env={"MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.1})})
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=40)
    wait_for(lambda: Run.objects.get(pk=run.pk).items_done >= 40, 60, "the first chunk")
    assert runs.cancel_run(run)
    wait_for(lambda: not running_chunk(run), 10, "the chunk in hand to see the cancellation")
    written = Preprocessed.objects.filter(galaxy__survey=survey).count()
    workers_idle(app, 30)  # the worker has left the chunk: nothing more can be written
    assert Preprocessed.objects.filter(galaxy__survey=survey).count() == written
    run.refresh_from_db()
    assert run.status == "cancelled" and written < run.items_total
    states = set(RunChunk.objects.filter(run=run).values_list("state", flat=True))
    assert "cancelled" in states and "running" not in states and "queued" not in states


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_chunk_goes_to_a_new_worker_once_its_heartbeat_stops(synthetic_bundle, start_worker, monkeypatch):
    ingest_bundle(synthetic_bundle, "reaped")
    survey = Survey.objects.get(name="reaped")
    beats = {"MORPHOMASS_HEARTBEAT_S": "0.5", "MORPHOMASS_HEARTBEAT_SILENCE_S": "3"}
    for name, value in beats.items():
        monkeypatch.setenv(name, value)
    worker = start_worker("cpu", env={**beats, "MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.05})})
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=30)
    lost = wait_for(lambda: running_chunk(run), 60, "a chunk in flight")
    worker.kill()
    assert reaper.reap_stale_runs() == []  # silent for less than the heartbeat silence: not yet
    assert RunChunk.objects.get(pk=lost.pk).state == "running"
    later = timezone.now() + timedelta(seconds=limits.heartbeat_silence_s() + 0.5)  # the reaper's next look
    assert reaper.reap_stale_runs(now=later) == []  # handed out again, the run goes on
    lost.refresh_from_db()
    assert lost.state == "queued" and "handed out again: no heartbeat" in lost.error
    start_worker("cpu", env=beats)
    run = finished(run, 120)
    assert run.status == "succeeded", run.message
    assert_every_galaxy_accounted_once(run)
    lost.refresh_from_db()
    assert lost.attempts == 2 and lost.state == "done"


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_a_chunk_that_lost_its_worker_on_every_delivery_fails_the_run_saying_so(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    chunk = run.chunks.order_by("index").first()
    long_ago = timezone.now() - timedelta(seconds=limits.heartbeat_silence_s() + 1)
    RunChunk.objects.filter(pk=chunk.pk).update(
        state="running", attempts=runs.MAX_CHUNK_ATTEMPTS, heartbeat=long_ago, started=long_ago
    )
    Run.objects.filter(pk=run.pk).update(status="running")
    assert reaper.reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and f"lost its worker on each of its {runs.MAX_CHUNK_ATTEMPTS} deliveries" in run.message
    assert not RunChunk.objects.filter(run=run, state__in=["running", "queued"]).exists()
    # The survey is free again: a new run continues with what is left.
    assert start_stage("preprocess", survey, resolutions=[32], preset_name="test").status in {"queued", "running"}


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_transient_database_error_is_retried_and_the_chunk_still_counts_once(synthetic_bundle, start_worker):
    ingest_bundle(synthetic_bundle, "retried")
    survey = Survey.objects.get(name="retried")
    victim = Galaxy.objects.get(pk=galaxies_to_preprocess(survey, [32])[10])
    start_worker("cpu", env={"MORPHOMASS_FAULTS": json.dumps({"transient_error_objids": [victim.objid]})})
    run = finished(start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=200), 90)
    assert run.status == "succeeded", run.message
    chunk = run.chunks.get()
    assert chunk.attempts == 2  # retried with backoff, claimed again, processed one galaxy at a time
    assert Preprocessed.objects.get(galaxy=victim).status == "ok"
    assert_every_galaxy_accounted_once(run)


# --- the ledger is the truth, the broker only the doorbell -----------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_a_chunk_sent_twice_is_claimed_once_whichever_message_arrives_first(survey):
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    chunk = run.chunks.order_by("index").first()
    first_id = chunk.task_id
    # The message sent again arrives first: it takes the queued chunk, and the ledger names it ...
    assert runs.claim_chunk(chunk.pk, "w1", task_id="sent-again") is not None
    chunk.refresh_from_db()
    assert chunk.state == "running" and chunk.task_id == "sent-again" and chunk.attempts == 1
    # ... so the original, arriving late, finds the chunk in another message's hands and does nothing.
    assert runs.execute_chunk(chunk.pk, "w2", preprocess.HOOKS, task_id=first_id) == {"chunk": chunk.pk, "skipped": True}
    chunk.refresh_from_db()
    assert chunk.worker == "w1" and chunk.attempts == 1
    # The same message again (the worker died, the broker redelivered it) is a redelivery: careful mode.
    again = runs.claim_chunk(chunk.pk, "w3", task_id="sent-again")
    assert again is not None and again.careful and again.chunk.attempts == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_the_reaper_sends_again_a_queued_chunk_no_worker_claimed_waiting_longer_each_time(survey, redis_url):
    import redis

    broker = redis.Redis.from_url(redis_url)
    app.control.purge()
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")  # its messages never went out
    n = run.chunks.count()
    old_ids = set(run.chunks.values_list("task_id", flat=True))
    start = timezone.now()

    def sends() -> set[int]:
        return set(run.chunks.values_list("sends", flat=True))

    try:
        assert reaper.reap_stale_runs(now=start) == [] and sends() == {0}  # a minute's grace
        assert reaper.reap_stale_runs(now=start + timedelta(seconds=61)) == []
        assert sends() == {1} and broker.llen("cpu") == n  # sent, each under a fresh task id
        assert not old_ids & set(run.chunks.values_list("task_id", flat=True))
        assert all(c.sent is not None and c.state == "queued" for c in run.chunks.all())
        sent = run.chunks.first().sent
        reaper.reap_stale_runs(now=sent + timedelta(seconds=61))
        assert sends() == {2}  # a minute after the first send ...
        sent = run.chunks.first().sent
        reaper.reap_stale_runs(now=sent + timedelta(seconds=61))
        assert sends() == {2}  # ... two minutes after the second
        reaper.reap_stale_runs(now=sent + timedelta(seconds=121))
        assert sends() == {3} and broker.llen("cpu") == 3 * n
        run.refresh_from_db()
        assert run.status in Run.ACTIVE
    finally:
        app.control.purge()


@pytest.mark.services
def test_the_queue_wait_fails_only_runs_whose_queue_no_worker_consumes(start_worker):
    start_worker("cpu")
    listening = reaper._QueuesListenedTo()
    assert listening("cpu") and not listening("gpu")
    # A solo worker busy reaping cannot answer for itself: the queue it took the reaper from counts.
    assert reaper._QueuesListenedTo(consumed_here=("gpu",))("gpu")


@pytest.mark.django_db
def test_a_refusal_names_the_stage_still_active_when_its_workflow_has_ended(survey):
    parent = runs.create_run("workflow", survey, [], preset="test", config={"stages": ["preprocess"]}, status="running")
    child = runs.create_run("preprocess", survey, [[1]], preset="test", parent=parent)
    Run.objects.filter(pk=parent.pk).update(status="failed")  # its end recorded, its stage's not
    assert runs.active_root(survey) == child
    with pytest.raises(runs.RunConflict, match=f"run #{child.pk} \\(preprocess, queued\\)"):
        start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    reaper.reap_stale_runs()  # a stage that outlived its workflow is cancelled
    child.refresh_from_db()
    assert child.status == "cancelled" and runs.active_root(survey) is None


@pytest.mark.django_db
@pytest.mark.usefixtures("deferred")
def test_workers_and_the_reaper_keep_the_databases_time_whatever_their_own_clocks_say(survey, monkeypatch):
    """A worker whose clock runs an hour behind, and a reaper on a machine an hour ahead, judge a live
    chunk alive: every time the ledger stamps or compares is the database's (catalogue.selectors.clock)."""
    from catalogue.selectors.clock import database_now

    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    chunk = run.chunks.order_by("index").first()
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=1))  # this process: a slow worker
    claim = runs.claim_chunk(chunk.pk, "slow-clock-worker")
    runs.ChunkContext(claim).check(force=True)
    chunk.refresh_from_db()
    run.refresh_from_db()
    for stamp in (chunk.started, chunk.heartbeat, run.heartbeat, run.created):
        assert abs((stamp - database_now()).total_seconds()) < 60, stamp
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))  # and now: a fast reaper
    assert reaper.reap_stale_runs() == []
    chunk.refresh_from_db()
    assert chunk.state == "running" and chunk.attempts == 1 and chunk.worker == "slow-clock-worker"
    assert not RunChunk.objects.filter(run=run, sends__gt=0).exists()  # nothing sent again either
