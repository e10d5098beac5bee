"""One workflow from an ingested survey to its catalogue: `run_pipeline` and the services
behind it. Resuming (stages reused only while their inputs are unchanged), what the
console shows, and faults with real worker processes: a stage that raises, a worker
killed mid-stage, cancelling the parent, and workflows side by side."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from catalogue.models import Galaxy, Preprocessed, Run, Survey
from catalogue.orchestration.stage import reusable_run, stage_inputs, start_stage
from catalogue.orchestration.workflow import start_workflow
from catalogue.services import runs
from catalogue.services.ingest import ingest_bundle
from catalogue.stages.preprocess import galaxies_to_preprocess
from pipeline.presets import preset
from tests.run_helpers import FAST_REDELIVERY, assert_every_galaxy_accounted_once, finished, running_chunk, wait_for


def ingested(bundle, name: str) -> Survey:
    ingest_bundle(bundle, name)
    return Survey.objects.get(name=name)


def run_cli(*args: str) -> tuple[str, str]:
    """run_pipeline's stdout and stderr (not a terminal: plain lines)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("run_pipeline", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- in-process (no workers): resuming and the console ----------------------------


@pytest.mark.django_db
def test_a_stages_inputs_change_with_the_preset_the_galaxies_and_the_runs_upstream(synthetic_bundle):
    survey = ingested(synthetic_bundle, "inputs")
    before = stage_inputs("cnn", survey, "test")
    assert before == stage_inputs("cnn", survey, "test")  # deterministic
    assert before["upstream"] == {"preprocess": None}
    assert stage_inputs("cnn", survey, "fast")["settings"] != before["settings"]
    run_cli("--survey", "inputs", "--preset", "test", "--stages", "preprocess")
    after_preprocess = stage_inputs("cnn", survey, "test")
    assert after_preprocess["upstream"]["preprocess"] == Run.objects.get(survey=survey, stage="preprocess").pk
    Galaxy.objects.create(survey=survey, objid=1, ra=10.0, dec=1.0, z=0.05)
    assert stage_inputs("preprocess", survey, "test")["galaxies"][0] == before["galaxies"][0] + 1
    assert reusable_run("preprocess", survey, "test") is None  # a new galaxy: preprocess is redone


@pytest.mark.django_db
def test_run_pipeline_shows_each_stage_and_a_second_run_reuses_what_is_done(synthetic_bundle):
    ingested(synthetic_bundle, "cli")
    out, err = run_cli("--survey", "cli", "--preset", "test", "--stages", "cnn,features,preprocess")
    workflow = Run.objects.get(survey__name="cli", stage="workflow")
    assert workflow.status == "succeeded" and workflow.config["stages"] == ["preprocess", "cnn", "features"]
    lines = [line for line in err.splitlines() if not line.split()[1].endswith("%")]  # not the slow stages' progress lines
    assert [line.split()[:2] for line in lines] == [
        ["preprocess", "started:"],
        ["preprocess", "succeeded:"],
        ["cnn", "started:"],
        ["cnn", "succeeded:"],
        ["features", "started:"],
        ["features", "succeeded:"],
    ]
    assert "\r" not in err and "\x1b" not in err  # not a terminal: no bars, no escape codes
    preprocess = workflow.children.get(stage="preprocess")
    total = preprocess.items_total
    assert f"preprocess  succeeded: {preprocess.items_done} done, {preprocess.items_failed} failed of {total} galaxies" in err
    assert (
        preprocess.items_done + preprocess.items_failed
        == total
        == len(galaxies_to_preprocess(preprocess.survey, [48], force=True))
    )
    assert f"workflow #{workflow.pk} on survey cli (test): succeeded" in out

    out, err = run_cli("--survey", "cli", "--preset", "test", "--stages", "preprocess,cnn", "--json")
    again = json.loads(out)
    assert again["status"] == "succeeded"
    assert {s: (v["reused"], v["run"]) for s, v in again["stages"].items()} == {
        "preprocess": (True, preprocess.pk),
        "cnn": (True, workflow.children.get(stage="cnn").pk),
    }
    assert again["stages"]["cnn"]["done"] == 5 and "up to date: reusing run" in err  # CNN1-4 and CNN4 on colour
    page = Client().get(f"/runs/{again['run']}/").content.decode()
    assert page.count("reused (it succeeded earlier with the same preset, galaxies and inputs)") == 2
    assert Run.objects.filter(survey__name="cli", stage="cnn").count() == 1  # not trained twice

    run_cli("--survey", "cli", "--preset", "test", "--stages", "preprocess", "--force")
    assert Run.objects.filter(survey__name="cli", stage="preprocess").count() == 2
    assert reusable_run("cnn", Survey.objects.get(name="cli"), "test") is None  # its input was redone

    out, _ = run_cli("--attach", str(workflow.pk))
    assert f"workflow #{workflow.pk}" in out and "cnn         succeeded" in out
    with pytest.raises(CommandError, match="already ended"):
        run_cli("--cancel", str(workflow.pk))
    with pytest.raises(CommandError, match="--no-wait needs workers"):
        run_cli("--survey", "cli", "--no-wait")


@pytest.mark.django_db
def test_bad_input_is_refused_with_what_to_do(synthetic_bundle):
    ingested(synthetic_bundle, "bad")
    with pytest.raises(CommandError, match=r"no survey named 'nope' \(surveys: .*bad"):
        run_cli("--survey", "nope")
    with pytest.raises(CommandError, match="run the cnn stage first"):
        run_cli("--survey", "bad", "--preset", "test", "--stages", "features,gbm")
    assert not Run.objects.filter(survey__name="bad").exists()  # nothing began: no failed workflow left behind
    with pytest.raises(CommandError, match="no run #4242"):
        run_cli("--attach", "4242")


@pytest.mark.django_db
def test_features_use_the_networks_of_a_cnn_run_that_succeeded_not_of_one_cancelled_half_way():
    from django.utils import timezone

    from catalogue.models import TrainedModel
    from catalogue.selectors import latest_cnn_models

    survey = Survey.objects.create(name="halfway")
    older = Run.objects.create(stage="cnn", survey=survey, preset="test", status="succeeded", finished=timezone.now())
    TrainedModel.objects.create(kind="cnn", name="cnn4gi", survey=survey, run=older, preset="test")  # a run that had i images
    done = Run.objects.create(stage="cnn", survey=survey, preset="test", status="succeeded", finished=timezone.now())
    complete = {
        r: TrainedModel.objects.create(kind="cnn", name=r, survey=survey, run=done, preset="test")
        for r in ("cnn1", "cnn2", "cnn3", "cnn4")
    }
    cancelled = Run.objects.create(stage="cnn", survey=survey, preset="test", status="cancelled", finished=timezone.now())
    TrainedModel.objects.create(kind="cnn", name="cnn1", survey=survey, run=cancelled, preset="test")  # trained before the stop
    assert latest_cnn_models(survey, "test") == complete  # not the older run's colour network beside these
    colour = TrainedModel.objects.create(kind="cnn", name="cnn4gi", survey=survey, run=done, preset="test")
    assert latest_cnn_models(survey, "test") == {**complete, "cnn4gi": colour}


@pytest.mark.django_db
def test_two_workflows_started_at_once_on_one_survey_one_is_refused_by_the_database(monkeypatch):
    """The check before creating the parent can miss a workflow another process is creating
    at the same moment; the database's one-active-workflow constraint refuses the second."""
    survey = Survey.objects.create(name="race")
    first = Run.objects.create(stage="workflow", survey=survey, status="running", config={"stages": ["preprocess"]})
    monkeypatch.setattr(runs, "active_root", lambda _survey: None)  # as if the first had not committed yet
    # preprocess: a training stage on this target-less survey would be refused before the race
    with pytest.raises(runs.RunConflict, match=f"run #{first.pk} \\(workflow, running\\) is already active on survey race"):
        start_workflow(survey, ["preprocess"], preset_name="test")
    assert list(Run.objects.filter(survey=survey)) == [first]


@pytest.mark.django_db
def test_two_lone_stages_started_at_once_on_one_survey_one_is_refused_by_the_database(monkeypatch):
    """Different stages started alone at the same moment: the checks before creating can miss
    each other, and the database's one-active-run-per-survey constraint refuses the second."""
    survey = Survey.objects.create(name="stagerace")
    first = Run.objects.create(stage="predict", survey=survey, status="running")
    real, calls = runs.active_root, []

    def not_yet_committed(found_survey):  # the first check misses it, the conflict's own lookup finds it
        calls.append(found_survey)
        return None if len(calls) == 1 else real(found_survey)

    monkeypatch.setattr(runs, "active_root", not_yet_committed)
    with pytest.raises(runs.RunConflict, match=f"run #{first.pk} \\(predict, running\\) is already active"):
        start_stage("preprocess", survey, preset_name="test")
    assert list(Run.objects.filter(survey=survey)) == [first]


class FailsHalfWayThroughPickling:
    """Raises when pickle reaches it, after what came before has been written: a worker dying while writing a model."""

    def __reduce__(self):
        raise MemoryError("killed while writing")


def test_a_model_file_is_written_whole_or_not_at_all():
    from django.core.files.storage import default_storage

    from catalogue.services.artifacts import load_pickle, save_pickle

    with pytest.raises(MemoryError):
        save_pickle({"trees": list(range(100_000)), "tail": FailsHalfWayThroughPickling()}, "models/broken.pkl")
    assert not default_storage.exists("models/broken.pkl")  # nothing half-written under the name
    name = save_pickle({"trees": [1, 2, 3]}, "models/whole.pkl")
    assert load_pickle(name) == {"trees": [1, 2, 3]}


# --- real workers ---------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_stage_that_raises_fails_the_workflow_naming_it_and_a_rerun_continues_from_it(small_bundle, start_worker):
    survey = ingested(small_bundle, "raises")
    start_worker("cpu")
    broken_gpu = start_worker("gpu", env={"MORPHOMASS_FAULTS": json.dumps({"fail_stages": ["features"]})})
    with pytest.raises(CommandError, match=r"failed: stage features \(run #\d+\) failed.*Run the same command again"):
        run_cli("--survey", "raises", "--preset", "test", "--stages", "preprocess,cnn,features")
    workflow = Run.objects.get(survey=survey, stage="workflow")
    assert workflow.status == "failed" and "InjectedFailure" in workflow.message
    assert "Traceback" in workflow.error and "injected failure in the features stage" in workflow.error
    assert dict(workflow.children.values_list("stage", "status")) == {
        "preprocess": "succeeded",
        "cnn": "succeeded",
        "features": "failed",
    }

    broken_gpu.stop()
    start_worker("gpu")
    out, err = run_cli("--survey", "raises", "--preset", "test", "--stages", "preprocess,cnn,features")
    rerun = Run.objects.filter(survey=survey, stage="workflow").latest("created")
    assert rerun.status == "succeeded" and set(rerun.config["reused"]) == {"preprocess", "cnn"}
    assert list(rerun.children.values_list("stage", flat=True)) == ["features"]
    assert "preprocess  up to date" in err and "features    succeeded" in err


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_workflows_on_two_surveys_survive_a_worker_killed_mid_stage(synthetic_bundle, start_worker):
    first, second = ingested(synthetic_bundle, "left"), ingested(synthetic_bundle, "right")
    env = {**FAST_REDELIVERY, "MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.03})}
    worker = start_worker("cpu", env=env)
    out, _ = run_cli("--survey", "left", "--preset", "test", "--stages", "preprocess", "--no-wait")
    left = Run.objects.get(survey=first, stage="preprocess")  # one stage: started alone, not as a workflow
    assert f"run_pipeline --attach {left.pk}" in out
    right = start_workflow(second, ["preprocess"], preset_name="test")
    with pytest.raises(runs.RunConflict, match=f"run #{left.pk} \\(preprocess"):
        start_workflow(first, ["preprocess", "cnn"], preset_name="test")  # one workflow or lone stage per survey at a time
    with pytest.raises(CommandError, match=f"--attach {left.pk}"):
        run_cli("--survey", "left", "--preset", "test", "--stages", "preprocess")

    right_stage = wait_for(lambda: right.children.first(), 30, "the right workflow's stage")
    wait_for(lambda: running_chunk(left) or running_chunk(right_stage), 60, "a chunk in flight")
    worker.kill()
    start_worker("cpu", env=env)
    out, _ = run_cli("--attach", str(left.pk))
    assert f"preprocess #{left.pk} on survey left (test): succeeded" in out
    right = finished(right, 120)
    assert right.status == "succeeded", right.message
    left.refresh_from_db()
    for stage in (left, right.children.get()):
        assert_every_galaxy_accounted_once(stage)
    totals = left.items_total + right.children.get().items_total
    assert Preprocessed.objects.filter(galaxy__survey__in=[first, second]).count() == totals > 300


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_cancelling_the_workflow_stops_its_stage_and_a_rerun_does_only_what_is_left(synthetic_bundle, start_worker):
    survey = ingested(synthetic_bundle, "halted")
    start_worker("cpu", env={"MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.1})})
    workflow = start_workflow(survey, ["preprocess", "cnn"], preset_name="test")
    stage = workflow.children.get()
    wait_for(lambda: Run.objects.get(pk=stage.pk).items_done >= 50, 60, "the first chunk")
    out, _ = run_cli("--cancel", str(workflow.pk))
    assert f"run #{workflow.pk} cancelled" in out
    workflow, stage = finished(workflow, 10), finished(stage, 10)
    assert workflow.status == stage.status == "cancelled"
    wait_for(lambda: not running_chunk(stage), 10, "the chunk in hand to stop")
    handled = Preprocessed.objects.filter(galaxy__survey=survey)
    assert 50 <= handled.count() < stage.items_total and not Run.objects.filter(survey=survey, stage="cnn").exists()
    done = handled.filter(status="ok").count()  # a galaxy that failed is tried again
    left = galaxies_to_preprocess(survey, preset("test")["resolutions"])

    rerun = start_workflow(survey, ["preprocess", "cnn"], preset_name="test")
    assert rerun.config["reused"] == {}  # a cancelled stage is not reused
    assert rerun.children.get().items_total == len(left) == stage.items_total - done  # only what is left
    assert runs.cancel_run(rerun)


@pytest.mark.django_db
def test_the_same_inputs_give_the_same_seeds_and_metrics_whatever_ran_before(small_bundle):
    """One bundle trained twice under two names, with other runs between: every stage gets the same
    seed and every model the same metrics, though every database id differs."""
    from catalogue.models import TrainedModel
    from catalogue.orchestration.start import start
    from catalogue.selectors import workflow_stages

    first = start(ingested(small_bundle, "first"), preset_name="test")
    assert first.status == "succeeded", first.message
    between = ingested(small_bundle, "between")
    assert start(between, ["preprocess"], preset_name="test").status == "succeeded"  # other runs in between
    again = start(ingested(small_bundle, "again"), preset_name="test")
    assert again.status == "succeeded", again.message
    ran, rerun = ({stage: run for stage, run, _ in workflow_stages(w)} for w in (first, again))
    assert {s: r.config["seed"] for s, r in rerun.items()} == {s: r.config["seed"] for s, r in ran.items()}
    assert {s: r.pk for s, r in rerun.items()} != {s: r.pk for s, r in ran.items()}

    def metrics(runs: dict) -> dict:
        models = TrainedModel.objects.filter(run__in=[runs["cnn"], runs["gbm"]])
        return {m.name: json.dumps(m.metrics, sort_keys=True) for m in models}

    assert len(metrics(ran)) == 12 and metrics(ran) == metrics(rerun)


# --- boundaries that outages cannot lose ---------------------------------------------


@pytest.mark.django_db
def test_a_boundary_lost_to_an_outage_is_crossed_by_the_reapers_watch(synthetic_bundle, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from catalogue.celery import app
    from catalogue.orchestration import reaper

    survey = ingested(synthetic_bundle, "boundary")
    # The stage's end is recorded but nothing moves the workflow on: as when the database went
    # away just after preprocess ended (the finish listener's start of cnn failed).
    with monkeypatch.context() as patched:
        patched.setattr(runs, "finish_listeners", [])
        workflow = start_workflow(survey, ["preprocess", "cnn"], preset_name="test")
    workflow.refresh_from_db()
    assert workflow.status == "running" and not workflow.children.filter(status__in=Run.ACTIVE).exists()
    app.conf.task_always_eager = False  # cnn's chunks stay queued (on_commit never fires in a test)
    try:
        assert reaper.reap_stale_runs() == [] and not workflow.children.filter(stage="cnn").exists()  # a minute's grace
        reaper.reap_stale_runs(now=timezone.now() + timedelta(seconds=61))
    finally:
        app.conf.task_always_eager = True
    cnn = workflow.children.get(stage="cnn")
    assert cnn.status in Run.ACTIVE
    workflow.refresh_from_db()
    assert workflow.status == "running" and workflow.message == "cnn (2 of 2)"
    # The watch and a late listener may both try: the second finds the stage started, and the workflow goes on.
    from catalogue.orchestration.workflow import start_next

    start_next(workflow.pk)
    workflow.refresh_from_db()
    assert workflow.status == "running" and workflow.children.filter(stage="cnn").count() == 1
    # A workflow that fails takes its stage in progress with it.
    runs.fail_run(workflow.pk, "failed for the test")
    cnn.refresh_from_db()
    assert cnn.status == "cancelled"


@pytest.mark.django_db
def test_a_workflow_whose_failed_stage_went_unheard_fails_naming_it(synthetic_bundle, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from catalogue.orchestration import reaper

    survey = ingested(synthetic_bundle, "unheard")
    monkeypatch.setenv("MORPHOMASS_FAULTS", json.dumps({"fail_stages": ["preprocess"]}))
    from catalogue.services import faults

    faults._faults.cache_clear()
    try:
        with monkeypatch.context() as patched, pytest.raises(faults.InjectedFailure):
            patched.setattr(runs, "finish_listeners", [])
            start_workflow(survey, ["preprocess", "cnn"], preset_name="test")
    finally:
        monkeypatch.delenv("MORPHOMASS_FAULTS")
        faults._faults.cache_clear()
    workflow = Run.objects.get(survey=survey, stage="workflow")
    assert workflow.status == "running"
    reaper.reap_stale_runs(now=timezone.now() + timedelta(seconds=61))
    workflow.refresh_from_db()
    assert workflow.status == "failed" and "stage preprocess" in workflow.message and "failed" in workflow.message
    assert not workflow.children.filter(stage="cnn").exists()


@pytest.mark.django_db
def test_a_stage_whose_galaxies_all_fail_fails_naming_why_and_the_refusal_after_it_names_what_is_missing(
    synthetic_bundle, monkeypatch
):
    """As with workers that cannot see the ingest's files: preprocessing fails every galaxy, so the stage
    fails with the commonest reasons (not 'succeeded: 0 done'), the workflow stops there, and training's
    refusal says the targets' galaxies are out of the sample and why, not that there are no targets."""
    from django.core.files.storage import default_storage

    from catalogue.models import Image
    from catalogue.selectors import require_targets

    survey = ingested(synthetic_bundle, "unseen")
    for name in Image.objects.filter(galaxy__survey=survey).exclude(file="").values_list("file", flat=True):
        default_storage.delete(name)
    start_workflow(survey, ["preprocess", "cnn"], preset_name="test")
    workflow = Run.objects.get(survey=survey, stage="workflow")
    preprocess = workflow.children.get(stage="preprocess")
    assert preprocess.status == "failed" and preprocess.items_done == 0
    handled = preprocess.items_failed
    assert handled == preprocess.items_total > 100
    # one cause, one line: the galaxies' own file names are told apart, not counted apart
    assert preprocess.message.startswith(f"{handled} of {handled} items failed (more than 50%): {handled} x FileNotFoundError")
    assert workflow.status == "failed" and "preprocess" in workflow.message
    assert not workflow.children.filter(stage="cnn").exists()
    with pytest.raises(ValueError, match="has M/L targets, but .* out of the learning sample .*preprocessing failed"):
        require_targets(survey)
    # the share is a setting: at 1, the same stage succeeds with every galaxy failed, as before
    monkeypatch.setenv("MORPHOMASS_MAX_FAILED_SHARE", "1")
    again = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    again.refresh_from_db()
    assert again.status == "succeeded" and again.items_done == 0 and again.items_failed == again.items_total
