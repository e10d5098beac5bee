"""Killed workers never stall a workflow: SIGKILL the worker once during each of the six
stages, and the heartbeat reaper hands each lost chunk to a fresh worker that finishes it,
every chunk counted once and nothing stored twice.

Real worker processes on Redis and PostgreSQL; the heartbeat (0.5 s), its silence limit
(3 s) and the reaper (each poll here instead of every minute) are shortened, as the
defaults (30 s, 180 s, 60 s) would make the test take half an hour."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.db.models import Count

from catalogue import registry
from catalogue.models import ExperimentResult, FeatureVector, Galaxy, Prediction, Run, RunChunk, Survey, TrainedModel
from catalogue.orchestration import reaper
from catalogue.orchestration.workflow import start_workflow
from catalogue.services.ingest import ingest_bundle
from pipeline.learning.named_models import NAMED_MODELS
from pipeline.presets import ALL_ROLES, COLOUR_ROLE
from tests.learning_synth import EXPERIMENT_TABLE_ROWS
from tests.run_helpers import assert_every_chunk_counted_once, assert_every_galaxy_accounted_once, wait_for

ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
BEATS = {"MORPHOMASS_HEARTBEAT_S": "0.5", "MORPHOMASS_HEARTBEAT_SILENCE_S": "3"}
#: Each stage slowed enough that a kill lands inside it.
SLOW = {"delay_s": 0.02, "slow_steps": {"cnn": 1.5, "features": 1.0, "gbm": 1.0, "experiments": 1.0, "predict": 1.0}}


def _stage_run(workflow: Run, stage: str) -> Run | None:
    return Run.objects.filter(parent=workflow, stage=stage).order_by("-created").first()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_in_each_of_the_six_stages_is_replaced_and_the_workflow_finishes_once(
    small_bundle, start_worker, monkeypatch
):
    ingest_bundle(small_bundle, "killed")
    survey = Survey.objects.get(name="killed")
    for name, value in BEATS.items():
        monkeypatch.setenv(name, value)  # the reaper runs in this process
    env = {**BEATS, "MORPHOMASS_FAULTS": json.dumps(SLOW)}
    workers = {queue: start_worker(queue, env=env) for queue in (registry.CPU_QUEUE, registry.GPU_QUEUE)}
    workflow = start_workflow(survey, list(registry.training_workflow_stages()), preset_name="test")

    recovery_s = {}
    for stage in registry.training_workflow_stages():

        def in_flight(stage=stage):
            run = _stage_run(workflow, stage)
            return run if run is not None and RunChunk.objects.filter(run=run, state="running").exists() else None

        run = wait_for(in_flight, 180, f"a chunk of {stage} in a worker's hands", interval=0.1)
        queue = registry.stage(stage).queue
        workers[queue].kill()  # SIGKILL, mid-stage
        killed_at = time.monotonic()
        workers[queue] = start_worker(queue, env=env)

        def recovered(run=run):
            reaper.reap_stale_runs()  # what celery beat does every minute
            run.refresh_from_db()
            return run.status in Run.TERMINAL

        wait_for(recovered, 300, f"the {stage} run to finish on the new worker", interval=0.3)
        recovery_s[stage] = time.monotonic() - killed_at
        assert run.status == "succeeded", (stage, run.message)
        assert RunChunk.objects.filter(run=run, attempts__gte=2).exists(), f"{stage}: no chunk was handed out again"

    wait_for(lambda: Run.objects.get(pk=workflow.pk).status in Run.TERMINAL, 60, "the workflow to end")
    workflow.refresh_from_db()
    assert workflow.status == "succeeded", workflow.message
    assert all(seconds < 600 for seconds in recovery_s.values()), recovery_s
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # seconds from each kill to its stage's end, for the record
    (ARTIFACTS / "liveness.json").write_text(json.dumps({**BEATS, "recovery_s": recovery_s}, indent=1))

    stage_runs = {run.stage: run for run in workflow.children.all()}
    assert set(stage_runs) == set(registry.training_workflow_stages())  # each stage ran once: no second run of any
    for run in stage_runs.values():
        assert_every_chunk_counted_once(run)
    assert_every_galaxy_accounted_once(stage_runs["preprocess"])
    assert sorted(TrainedModel.objects.filter(run=stage_runs["cnn"]).values_list("name", flat=True)) == sorted(ALL_ROLES)
    vectors = (
        FeatureVector.objects.filter(feature_set__run=stage_runs["features"]).values("feature_set__name").annotate(n=Count("id"))
    )
    per_set = {row["feature_set__name"]: row["n"] for row in vectors}
    done = stage_runs["features"].items_done
    colour = per_set.pop(f"{COLOUR_ROLE}.gz2_logits")
    assert set(per_set.values()) == {done} and 0.9 * done <= colour <= done  # one vector per galaxy and set (with i: colour)
    gbm = stage_runs["gbm"]
    assert sorted(TrainedModel.objects.filter(run=gbm).values_list("name", flat=True)) == sorted(s.name for s in NAMED_MODELS)
    rows = ExperimentResult.objects.filter(run=stage_runs["experiments"]).values("experiment").annotate(n=Count("id"))
    assert {row["experiment"]: row["n"] for row in rows} == EXPERIMENT_TABLE_ROWS  # no table doubled
    galaxies = Galaxy.objects.filter(survey=survey).exclude(status="rejected").count()
    unpredicted = stage_runs["predict"].result["unpredicted"]
    for model in TrainedModel.objects.filter(run=gbm):
        assert Prediction.objects.filter(model=model).count() == galaxies - unpredicted[model.name], model.name
