"""The stage registry: every stage described once, and everything else derived from it.

Choices, tasks, queues, time limits, units and body modules come from one entry per stage.
With a real worker process: a gbm model that fits for longer than a chunk's limit keeps
beating and is not taken for lost, and a killed worker's chunk goes to another worker."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from catalogue import limits, registry, stages
from catalogue.admin import StartRunForm
from catalogue.api.serializers import RunStartSerializer
from catalogue.celery import app
from catalogue.console import _unit
from catalogue.models import Run, RunStage, Survey, TrainedModel
from catalogue.orchestration import reaper
from catalogue.orchestration.stage import start_stage
from catalogue.orchestration.workflow import start_workflow
from catalogue.services.ingest import ingest_bundle
from catalogue.tasks import STAGE_TASKS
from pipeline.learning.named_models import NAMED_MODEL_NAMES
from tests.run_helpers import finished, wait_for


def test_every_stage_has_a_task_a_queue_a_limit_a_unit_a_body_and_every_choice():
    names = list(registry.stage_names())
    assert set(RunStage.values) == {*names, registry.WORKFLOW}
    assert [value for value, _ in StartRunForm.base_fields["stages"].choices] == names
    assert list(RunStartSerializer().fields["stage"].choices) == names
    router = app.amqp.router
    for stage in registry.stages():
        task = app.tasks[stage.task_name]
        assert STAGE_TASKS[stage.name].name == task.name == stage.task_name
        assert router.route({}, stage.task_name)["queue"].name == stage.queue
        assert task.time_limit == limits.limits(stage.limit).hard_s and task.soft_time_limit < task.time_limit
        assert _unit(stage.name) == stage.unit
        body = stages.body(stage.name)
        assert callable(body.plan) and callable(body.inputs) and callable(body.HOOKS.body)
        assert set(stage.reads) <= set(names[: names.index(stage.name)])  # reads only what runs before it
    assert {s.name: s.limit for s in registry.stages() if s.limit == "train"} == {
        "cnn": "train",
        "gbm": "train",
        "experiments": "train",
        "adapt": "train",
    }


def test_an_unknown_stage_is_refused_with_the_list_of_stages():
    with pytest.raises(ValueError, match="unknown stage 'fit'; choose one of preprocess, cnn, features"):
        registry.stage("fit")
    with pytest.raises(ValueError, match="stages must be some of"):
        registry.in_pipeline_order(["predict", "nope"])
    assert registry.in_pipeline_order(["predict", "preprocess", "gbm"]) == ["preprocess", "gbm", "predict"]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_gbm_model_fitting_longer_than_a_chunk_limit_beats_and_a_killed_workers_chunk_goes_to_another(
    small_bundle, start_worker, monkeypatch
):
    ingest_bundle(small_bundle, "slowfit")
    survey = Survey.objects.get(name="slowfit")
    app.conf.task_always_eager = True  # the stages before gbm, in this process
    start_workflow(survey, ["preprocess", "cnn", "features"], preset_name="test")
    app.conf.task_always_eager = False

    short = {
        "MORPHOMASS_TASK_HARD_LIMITS": json.dumps({"chunk": 2, "train": 600, "control": 8}),
        "MORPHOMASS_HEARTBEAT_S": "0.5",
        "MORPHOMASS_HEARTBEAT_SILENCE_S": "3",
    }
    for name, value in short.items():
        monkeypatch.setenv(name, value)  # the reaper below, in this process, applies the same limits
    worker = start_worker("cpu", env={**short, "MORPHOMASS_FAULTS": json.dumps({"slow_steps": {"gbm:lgz": 8}})})
    run = start_stage("gbm", survey, preset_name="test")

    def fitting_lgz():
        run.refresh_from_db()
        return run.status == "running" and run.message.startswith("fitting lgz")

    wait_for(fitting_lgz, 60, "the gbm run to start fitting lgz", interval=0.1)
    reported = run.heartbeat

    def beat_on() -> bool:  # past a chunk's hard limit and the heartbeat silence, while lgz fits reporting nothing
        return run.chunks.get().heartbeat > reported + timedelta(seconds=3.5)

    wait_for(beat_on, 30, "the chunk's heartbeat to go on while lgz fits", interval=0.2)
    assert reaper.reap_stale_runs() == []
    chunk = run.chunks.get()
    assert chunk.state == "running" and chunk.attempts == 1  # not handed out: its heartbeat goes on
    run.refresh_from_db()
    assert run.items_done == 1 and run.message.startswith("fitting lgz")  # constant stored, and counted

    worker.kill()  # mid-fit: the heartbeat stops with it
    later = timezone.now() + timedelta(seconds=limits.heartbeat_silence_s() + 0.5)  # the reaper's next look
    assert reaper.reap_stale_runs(now=later) == []  # handed to another worker, not failed
    chunk.refresh_from_db()
    assert chunk.state == "queued" and "handed out again: no heartbeat" in chunk.error
    # Prefork: its main process answers the start-up ping while its child fits the chunk handed
    # out again (a solo worker busy fitting answers none, and a loaded machine fits for minutes).
    start_worker("cpu", pool="prefork", env=short)
    run = finished(run, 180)
    assert run.status == "succeeded", run.message
    chunk.refresh_from_db()
    assert chunk.state == "done" and chunk.attempts == 2
    names = list(TrainedModel.objects.filter(run=run).values_list("name", flat=True))
    assert sorted(names) == sorted(chunk.items) == sorted(NAMED_MODEL_NAMES)  # the seven, gi_images too
    assert Run.objects.filter(survey=survey, stage="gbm").count() == 1


@pytest.fixture
def toy_stage():
    """A stage that trains and belongs to the model set, added to the registry between features and gbm."""
    entry = registry.Stage(
        "toy",
        "toy training",
        registry.CPU_QUEUE,
        reads=("preprocess",),
        limit="train",
        unit="toys",
        trains=True,
        in_model_set=True,
        body="tests.toy_stage",
    )
    registry.register(entry, after="features")
    yield entry
    registry.unregister(entry.name)


@pytest.mark.django_db
def test_a_stage_added_to_the_registry_is_started_recorded_skipped_and_offered_with_no_other_edit(
    toy_stage, small_bundle, admin_client
):
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from catalogue.management.commands.run_pipeline import Command
    from catalogue.models import ModelSet
    from catalogue.orchestration.start import start
    from tests import toy_stage as body

    # offered by the CLI, the admin and the API, with its task on its queue
    assert "toy" in Command().create_parser("manage.py", "run_pipeline").format_help()
    assert "toy" in [value for value, _ in StartRunForm().fields["stages"].choices]
    assert "toy" in RunStartSerializer().fields["stage"].choices
    assert app.tasks[toy_stage.task_name].name == "catalogue.tasks.toy"
    assert app.amqp.router.route({}, toy_stage.task_name)["queue"].name == registry.CPU_QUEUE
    assert registry.stage_names().index("toy") == registry.stage_names().index("features") + 1

    # started by the one start path inside a training workflow (the CLI's: every stage)
    ingest_bundle(small_bundle, "toyed")
    survey = Survey.objects.get(name="toyed")
    call_command("run_pipeline", survey="toyed", preset="test", stdout=io.StringIO(), stderr=io.StringIO())
    workflow = Run.objects.get(survey=survey, stage=registry.WORKFLOW)
    assert workflow.status == "succeeded" and workflow.config["stages"] == list(registry.training_workflow_stages())
    toy_run = workflow.children.get(stage="toy")
    assert toy_run.status == "succeeded" and toy_run.pk in body.RAN
    # recorded in the lineage of the model set the training made
    model_set = ModelSet.objects.get(survey=survey)
    assert model_set.lineage["runs"]["toy"] == [toy_run.pk]

    # started alone from the API and from the admin's start form
    staff = APIClient()
    staff.force_authenticate(user=User.objects.get(is_superuser=True))
    alone = staff.post("/api/runs/", {"survey": "toyed", "stage": "toy", "preset": "test"}, format="json")
    assert alone.status_code == 201 and alone.json()["stage"] == "toy" and alone.json()["status"] == "succeeded"
    form = admin_client.post("/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["toy"], "preset": "test"})
    assert form.status_code == 302 and Run.objects.filter(survey=survey, stage="toy").count() == 3

    # skipped when a set is applied, and refused if asked for by name
    ingest_bundle(small_bundle, "toyapplied")
    other = Survey.objects.get(name="toyapplied")
    applied = start(other, model_set=model_set)
    assert applied.status == "succeeded" and "toy" not in applied.config["stages"]
    assert applied.config["stages"] == list(registry.apply_stages())
    with pytest.raises(ValueError, match="trains nothing: leave out toy"):
        start(other, ["toy"], model_set=model_set)
