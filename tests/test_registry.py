"""The stage registry: every stage described once, and everything else derived from it.

Choices, tasks, queues, time limits, units and body modules come from one entry per stage;
the reaper applies the entry's limit kind (a gbm model that fits for longer than a chunk's
limit is not taken for a lost worker), checked with a real worker process."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from catalogue import limits, registry, stages
from catalogue.admin import StartRunForm
from catalogue.api.serializers import RunStartSerializer
from catalogue.celery import app
from catalogue.console import _unit
from catalogue.models import Run, RunStage, Survey, TrainedModel
from catalogue.services import reaper
from catalogue.services.ingest import ingest_bundle
from catalogue.services.start import start_stage
from catalogue.services.workflow import start_workflow
from catalogue.tasks import STAGE_TASKS
from tests.run_helpers import finished, wait_for


def test_every_stage_has_a_task_a_queue_a_limit_a_unit_a_body_and_every_choice():
    names = list(registry.STAGE_NAMES)
    assert set(RunStage.values) == {*names, registry.WORKFLOW}
    assert [value for value, _ in StartRunForm.base_fields["stages"].choices] == names
    assert list(RunStartSerializer().fields["stage"].choices) == names
    router = app.amqp.router
    for stage in registry.STAGES:
        task = app.tasks[stage.task_name]
        assert STAGE_TASKS[stage.name].name == task.name == stage.task_name
        assert router.route({}, stage.task_name)["queue"].name == stage.queue
        assert task.time_limit == limits.limits(stage.limit).hard_s and task.soft_time_limit < task.time_limit
        assert _unit(stage.name) == stage.unit
        body = stages.body(stage.name)
        assert callable(body.plan) and callable(body.inputs) and callable(body.HOOKS.body)
        assert set(stage.reads) <= set(names[: names.index(stage.name)])  # reads only what runs before it
    assert {s.name: s.limit for s in registry.STAGES if s.limit == "train"} == {
        "cnn": "train",
        "gbm": "train",
        "experiments": "train",
    }


def test_an_unknown_stage_is_refused_with_the_list_of_stages():
    with pytest.raises(ValueError, match="unknown stage 'fit'; choose one of preprocess, cnn, features"):
        registry.stage("fit")
    with pytest.raises(ValueError, match="stages must be some of"):
        registry.in_pipeline_order(["predict", "nope"])
    assert registry.in_pipeline_order(["predict", "preprocess", "gbm"]) == ["preprocess", "gbm", "predict"]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_gbm_model_fitting_longer_than_a_chunk_limit_is_not_reaped_but_a_killed_worker_is(
    synthetic_bundle, start_worker, monkeypatch
):
    ingest_bundle(synthetic_bundle, "slowfit")
    survey = Survey.objects.get(name="slowfit")
    app.conf.task_always_eager = True  # the stages before gbm, in this process
    start_workflow(survey, ["preprocess", "cnn", "features"], preset_name="test")
    app.conf.task_always_eager = False

    tiny = {"MORPHOMASS_TASK_HARD_LIMITS": json.dumps({"chunk": 2, "train": 60, "control": 8}), "MORPHOMASS_REAPER_GRACE_S": "1"}
    for name, value in tiny.items():
        monkeypatch.setenv(name, value)  # the reaper below, in this process, applies the same limits
    slow_s = 8.0
    worker = start_worker("cpu", env={**tiny, "MORPHOMASS_FAULTS": json.dumps({"slow_steps": {"lgz": slow_s}})})
    run = start_stage("gbm", survey, preset_name="test")

    def fitting_lgz():
        run.refresh_from_db()
        return run.status == "running" and run.message.startswith("fitting lgz")

    wait_for(fitting_lgz, 60, "the gbm run to start fitting lgz", interval=0.1)
    silent_since = run.heartbeat
    chunk_silence = limits.silence_limit_s("chunk")
    assert chunk_silence == 3.0 and limits.silence_limit_s("train") == 61.0
    time.sleep(chunk_silence + 1.5)  # silent longer than a chunk may be, while the model fits
    assert reaper.reap_stale_runs() == []
    run.refresh_from_db()
    assert run.status == "running" and run.heartbeat == silent_since

    worker.kill()  # mid-fit: nobody will report again
    after_train_limit = timezone.now() + timedelta(seconds=limits.silence_limit_s("train"))
    assert reaper.reap_stale_runs() == []  # within the training limit, silence is no proof yet
    assert reaper.reap_stale_runs(now=after_train_limit) == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and "the workers were lost" in run.message
    assert list(TrainedModel.objects.filter(run=run).values_list("name", flat=True)) == ["constant"]

    start_worker("cpu")  # a healthy worker: a rerun does the whole stage
    rerun = finished(start_stage("gbm", survey, preset_name="test"), 180)
    assert rerun.status == "succeeded", rerun.message
    assert rerun.chunks.get().items == ["constant", "lgz", "powerlaw_gi", "gi", "g_morph", "gi_morph"]
    assert Run.objects.filter(survey=survey, stage="gbm").count() == 2
