"""The gbm, experiments and predict stages on an ingested synthetic survey (test preset), the
catalogue export with predictions, and the whole chain through real workers."""

from __future__ import annotations

import io
import json

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table
from django.core.management import CommandError, call_command
from django.db.models import Count

from catalogue.models import ExperimentResult, FeatureSet, Galaxy, Prediction, Run, Survey, TrainedModel
from catalogue.orchestration.stage import start_stage
from catalogue.orchestration.workflow import start_workflow
from catalogue.services import runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.ingest import ingest_bundle
from catalogue.services.learning_data import load_learning_data
from catalogue.stages import predict
from pipeline import units
from pipeline.learning import experiments, named_models
from pipeline.learning.experiments import EXPERIMENTS
from pipeline.learning.named_models import NAMED_MODELS, ModelSpec
from tests.learning_synth import EXPERIMENT_TABLE_ROWS
from tests.trained import INJECTED, coverage_tolerance

NAMES = {spec.name for spec in NAMED_MODELS}


def assert_p_values_follow_the_gain(details: dict) -> None:
    """The tests of "the first model's L1 is lower" agree with the gain they test: the mean gain is the
    difference of the means and lies in its bootstrap interval, and the bootstrap p-value (the share of
    resamples without a gain) is below 2.5% exactly when the interval's lower end is above zero."""
    gain, (lo, hi), p = details["mean_l1_gain"], details["bootstrap_ci95"], details["bootstrap_pvalue"]
    if "mean_l1_worse" in details:  # per class, only the gain is kept
        assert gain == pytest.approx(details["mean_l1_worse"] - details["mean_l1_better"]), details
    assert lo <= gain <= hi, details
    if abs(p - 0.025) > 0.002:
        assert (p < 0.025) == (lo > 0), details


@pytest.fixture
def stages(trained):
    """The shared trained survey: (survey, its run of each stage, its media, the objids without an i cutout)."""
    return trained.survey, trained.runs, trained.media, trained.no_i


@pytest.mark.django_db
def test_the_gbm_stage_stores_the_seven_named_models(stages):
    survey, stage_runs, *_ = stages
    run = Run.objects.get(pk=stage_runs["gbm"].pk)
    assert run.status == "succeeded", run.error or run.message
    models = {m.name: m for m in TrainedModel.objects.filter(run=run)}
    assert set(models) == NAMES
    assert {m.kind for n, m in models.items() if n in {"constant", "powerlaw_gi"}} == {"baseline"}
    features_sets = dict(FeatureSet.objects.filter(run=stage_runs["features"]).values_list("name", "pk"))
    data, _ = load_learning_data(survey, features_sets)
    test = data.rows("test")
    coloured = test[data.covered(("cnn4gi",), test)]
    assert len(test) - 5 < len(coloured) < len(test)  # a few test galaxies have no i image
    for name, model in models.items():
        assert model.preset == "test" and model.artifact.name.endswith(".pkl")
        assert model.hyperparameters["feature_sets"] == features_sets  # the features it read, by version
        rows = coloured if name == "gi_images" else test  # gi_images predicts where CNN4 on colour could look
        assert model.metrics["test"]["n"] == len(rows) > 5 and model.metrics["val"]["l1"] > 0
        assert model.metrics["test"]["n_unpredicted"] == len(test) - len(rows)
        fitted = load_pickle(model.artifact.name)
        predicted = fitted.predict(data, rows)
        l1 = np.mean(np.abs(predicted - data.target[rows]) / np.maximum(data.error[rows], 0.05 * data.target[rows]))
        assert l1 == pytest.approx(model.metrics["test"]["l1"], rel=1e-6), name  # the stored metric is the model's
    importance = models["gi"].metrics["permutation_importance"]
    assert [n for n, _ in importance] and importance == sorted(importance, key=lambda item: -item[1])
    assert set(models["g_morph"].metrics["test_per_class"]) <= {"irregular", "edge-on", "disk", "elliptical"}
    assert "L_g/L_i" in models["gi"].hyperparameters["features"]
    assert models["g_morph"].hyperparameters["selection"]["top_k"] == 50
    # gi_images: gi_morph's groups with CNN4 on colour's features in place of CNN4 on g's.
    features = models["gi_images"].hyperparameters
    assert features["groups"] == ["luminosity", "image", "distance", "cnn123", "cnn4gi"] and features["bands"] == "gi"
    read = features["features"]
    assert any(f.startswith("cnn4gi_custom.") for f in read) and not any(f.startswith("cnn4_custom.") for f in read)
    assert (
        models["gi_images"].metrics["calibration"]["calibrated_on"]["galaxies"]
        < models["gi_morph"].metrics["calibration"]["calibrated_on"]["galaxies"]
    )  # calibrated on the galaxies it learns from: those with i images


@pytest.mark.django_db
def test_galaxies_without_an_i_image_get_every_g_model_and_no_colour_image_guess(stages):
    survey, stage_runs, _, no_i = stages
    assert no_i
    galaxies = Galaxy.objects.filter(survey=survey, objid__in=no_i, status="ok")
    assert galaxies.count() == len(no_i)  # ingested with their g cutouts
    predicted = dict(
        Prediction.objects.filter(galaxy__in=galaxies, model__run=stage_runs["gbm"])
        .values_list("model__name")
        .annotate(n=Count("id"))
    )
    for name in ("constant", "lgz", "gi", "g_morph", "gi_morph"):
        assert predicted[name] == len(no_i), name
    assert "gi_images" not in predicted
    run = Run.objects.get(pk=stage_runs["predict"].pk)
    assert run.result["unpredicted"]["gi_images"] >= len(no_i)
    coloured = Galaxy.objects.filter(survey=survey, status="ok", preprocessed__i_band="ok")
    assert Prediction.objects.filter(model__run=stage_runs["gbm"], model__name="gi_images", galaxy__in=coloured).count() > 0.9 * (
        coloured.count()
    )


@pytest.mark.django_db
def test_a_survey_without_colour_features_fits_the_paper_models_and_skips_gi_images(stages):
    """Without CNN4 on colour's features (a survey without i images), the gbm stage fits the six
    models that need none, says why gi_images is left out, and its set serves predictions."""
    from catalogue.selectors import latest_named_models
    from catalogue.stages import gbm

    survey, stage_runs, *_ = stages
    FeatureSet.objects.filter(run=stage_runs["features"], name="cnn4gi.gz2_logits").delete()  # undone after the test
    plan = gbm.plan(survey, "test")
    assert plan.chunks == [[n for n in named_models.NAMED_MODEL_NAMES if n != "gi_images"]]
    assert "no cnn4gi features" in plan.config["skipped"]["gi_images"]
    assert named_models.fittable(NAMED_MODELS, ["cnn4gi"]) == [s for s in NAMED_MODELS if s.name != "gi_images"]
    TrainedModel.objects.filter(run=stage_runs["gbm"], name="gi_images").delete()
    assert set(latest_named_models(survey)) == NAMES - {"gi_images"}  # six named models are a complete set
    assert predict.plan(survey, "test").chunks == [[n for n in named_models.NAMED_MODEL_NAMES if n != "gi_images"]]


@pytest.mark.django_db
def test_the_experiments_stage_stores_every_table(stages):
    survey, stage_runs, *_ = stages
    run = Run.objects.get(pk=stage_runs["experiments"].pk)
    assert run.status == "succeeded", run.error or run.message
    rows = ExperimentResult.objects.filter(run=run, survey=survey)
    counts = {name: rows.filter(experiment=name).count() for name in EXPERIMENTS}
    assert counts == EXPERIMENT_TABLE_ROWS
    significance = rows.get(experiment="significance", method="gi_morph over gi")
    assert significance.details["bootstrap_resamples"] == 100_000
    assert_p_values_follow_the_gain(significance.details)
    # CNN4 on colour: gi_images against gi_morph, overall and per class with both tests where a class is large enough.
    colour = rows.get(experiment="significance", method="gi_images over gi_morph")
    assert colour.details["n_unpaired"] > 0 and colour.details["n"] + colour.details["n_unpaired"] == significance.details["n"]
    per_class = colour.details["per_class_gain"]
    assert sum(entry["n"] for entry in per_class.values()) <= colour.details["n"]
    tested = {name: e for name, e in per_class.items() if e["n"] >= experiments.MIN_CLASS_PAIRED}
    assert tested
    for entry in tested.values():
        assert_p_values_follow_the_gain(entry)
    images = {r.method: r for r in rows.filter(experiment="colour_images")}
    assert list(images) == ["CNN4 on g (gi_morph)", "CNN4 on g and g - i (gi_images)", "both CNN4s"]
    assert len({r.n for r in images.values()}) == 1  # all on the same test galaxies: those with i images
    assert images["CNN4 on g and g - i (gi_images)"].l1 == pytest.approx(
        TrainedModel.objects.get(run=stage_runs["gbm"], name="gi_images").metrics["test"]["l1"]
    )
    assert rows.get(experiment="band_sets", method="gi_images").details["colour_images"] is True
    assert {r.loss for r in rows.filter(experiment="losses")} == {"l1", "l2", "rmsle"}
    # Rows that are named models carry the named model's own test metric.
    g_morph = TrainedModel.objects.get(run=stage_runs["gbm"], name="g_morph")
    assert rows.get(experiment="single_band", method="g_morph").l1 == pytest.approx(g_morph.metrics["test"]["l1"])


@pytest.mark.django_db
def test_the_predict_stage_predicts_every_galaxy_with_its_stellar_mass(stages):
    survey, stage_runs, *_ = stages
    run = Run.objects.get(pk=stage_runs["predict"].pk)
    assert run.status == "succeeded", run.error or run.message
    galaxies = Galaxy.objects.filter(survey=survey).exclude(status="rejected")
    model = TrainedModel.objects.get(run=stage_runs["gbm"], name="g_morph")
    predictions = Prediction.objects.filter(model=model)
    assert predictions.count() + run.result["unpredicted"]["g_morph"] == galaxies.count()
    excluded = galaxies.filter(status="excluded")
    assert excluded.exists() and predictions.filter(galaxy__in=excluded).count() == excluded.count()  # outside the sample too
    classes = dict(galaxies.values_list("morphology").annotate(n=Count("id")))
    assert set(classes) - {""} <= {"irregular", "edge-on", "disk", "elliptical"} and classes.get("", 0) < 5  # "": no image
    for p in predictions.select_related("galaxy")[:20]:
        assert p.ml_pred > 0 and p.mstar_pred == pytest.approx(p.ml_pred * p.galaxy.lum_g, rel=1e-6)
    # Delivered again, the chunk rewrites the same rows: one prediction per galaxy and model.
    before = predictions.count()
    chunk = run.chunks.get()
    type(chunk).objects.filter(pk=chunk.pk).update(state="queued")
    Run.objects.filter(pk=run.pk).update(status="running")
    runs.execute_chunk(chunk.pk, "again", predict.HOOKS)
    assert Prediction.objects.filter(model=model).count() == before


@pytest.mark.django_db
def test_export_adds_predictions_with_units(stages, tmp_path):
    survey, stage_runs, *_ = stages
    out = tmp_path / "catalogue.fits"
    call_command("export_catalogue", str(out), "--format", "fits", "--survey", survey.name, "--model", "gi_morph")
    table = Table.read(out)
    assert table["ml_pred"].unit == u.Unit(units.MASS_TO_LIGHT) and str(table["mstar_pred"].unit) == "solMass"
    model = TrainedModel.objects.get(run=stage_runs["gbm"], name="gi_morph")
    predicted = dict(Prediction.objects.filter(model=model).values_list("galaxy__objid", "ml_pred"))
    rows = {
        int(o): v for o, v, m in zip(table["objid"], table["ml_pred"], np.ma.getmaskarray(table["ml_pred"]), strict=True) if not m
    }
    assert rows == pytest.approx(predicted)
    assert np.ma.getmaskarray(table["ml_pred"]).sum() == len(table) - len(predicted)  # rejected galaxies: no value
    assert str(model.pk) in table.meta["MODEL"]
    with pytest.raises(CommandError, match="no model named 'gmorph'"):
        call_command("export_catalogue", str(out), "--format", "fits", "--survey", survey.name, "--model", "gmorph")
    with pytest.raises(CommandError, match="give the survey"):
        call_command("export_catalogue", str(out), "--format", "fits", "--model", "gi_morph")


@pytest.mark.django_db
def test_model_stages_refuse_clearly_without_their_inputs(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "bare")
    survey = Survey.objects.get(name="bare")
    with pytest.raises(ValueError, match="run the features stage first"):
        start_stage("gbm", survey, preset_name="test")
    with pytest.raises(ValueError, match="run the gbm stage first"):
        start_stage("experiments", survey, preset_name="test")
    with pytest.raises(CommandError, match="run the gbm stage first"):
        call_command("run_pipeline", "--survey", "bare", "--preset", "test", "--stages", "predict")
    assert not Run.objects.filter(survey=survey).exists()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_whole_chain_runs_through_real_workers(small_bundle, celery_workers):
    """run_pipeline --preset test: every stage, each on its queue's worker process."""
    ingest_bundle(small_bundle, "chain")
    survey = Survey.objects.get(name="chain")
    queues = {"preprocess": "cpu", "cnn": "gpu", "features": "gpu", "gbm": "cpu", "experiments": "cpu", "predict": "cpu"}
    # One workflow: each stage is started by the worker that finished the one before it.
    out, err = io.StringIO(), io.StringIO()
    call_command("run_pipeline", "--survey", "chain", "--preset", "test", "--timeout", "600", stdout=out, stderr=err)
    workflow = Run.objects.get(survey=survey, stage="workflow")
    assert workflow.status == "succeeded" and workflow.progress == 1.0, workflow.error
    stages = {run.stage: run for run in workflow.children.all()}
    assert set(stages) == set(queues) and f"workflow #{workflow.pk} on survey chain (test): succeeded" in out.getvalue()
    for stage, run in stages.items():
        assert run.status == "succeeded"
        assert f"{stage:<12}succeeded: {run.items_done} done" in err.getvalue()
        assert {c.worker.split()[0] for c in run.chunks.all()} == {celery_workers[queues[stage]]}, stage
    assert Prediction.objects.filter(galaxy__survey=survey, model__name="g_morph").count() > 50
    assert ExperimentResult.objects.filter(survey=survey).count() == sum(EXPERIMENT_TABLE_ROWS.values())


@pytest.mark.django_db
def test_run_pipeline_runs_the_model_stages(stages, capsys):
    survey = stages[0]
    call_command("run_pipeline", "--survey", survey.name, "--preset", "test", "--stages", "gbm,predict", "--json")
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["stages"]["gbm"]["status"] == summary["stages"]["predict"]["status"] == "succeeded"
    assert summary["stages"]["gbm"]["done"] == len(NAMES) == 7


@pytest.mark.django_db
def test_predictions_carry_calibrated_intervals_and_the_out_of_support_flag(stages):
    survey, stage_runs, *_ = stages
    models = {m.name: m for m in TrainedModel.objects.filter(run=stage_runs["gbm"])}
    for name, model in models.items():
        calibration = model.metrics["calibration"]
        assert calibration["method"] == "cross-conformal", name  # every named model, since gbm stage version 2
        assert calibration["calibrated_on"]["galaxies"] > 100 and "out-of-fold" in calibration["description"], name
        n_test, n_calibration = calibration["n"], calibration["calibrated_on"]["galaxies"]
        for level in (0.68, 0.95):
            coverage = calibration[f"coverage_{round(100 * level)}"]
            assert abs(coverage - level) < coverage_tolerance(level, n_test, n_calibration), (name, level, coverage)
        assert calibration["coverage_68"] <= calibration["coverage_95"]
        assert calibration["width_95_dex"] > calibration["width_68_dex"] > 0 and calibration["target_error_dex"] > 0
        assert {"by_class", "by_redshift", "by_luminosity", "out_of_support"} <= set(calibration)
    rows = Prediction.objects.filter(model=models["gi_morph"]).select_related("galaxy")
    for p in rows[:30]:
        assert p.ml_lo95 <= p.ml_lo68 <= p.ml_pred <= p.ml_hi68 <= p.ml_hi95
        assert p.mstar_lo68 <= p.mstar_pred <= p.mstar_hi68
    injected = {p.galaxy.objid: p for p in rows.filter(galaxy__objid__in=INJECTED)}
    assert set(injected) == set(INJECTED)  # predicted, though outside the learning sample
    for objid, kind in INJECTED.items():
        prediction = injected[objid]
        assert prediction.out_of_support, (kind, prediction.support_reasons)
        assert any(kind in reason for reason in prediction.support_reasons), (kind, prediction.support_reasons)
    flagged_share = rows.filter(out_of_support=True).exclude(galaxy__objid__in=INJECTED).count() / rows.count()
    assert flagged_share < 0.2  # the survey's own galaxies are mostly inside


@pytest.mark.django_db
def test_exports_and_api_carry_the_intervals(stages, tmp_path):
    from rest_framework.test import APIClient

    survey, *_ = stages
    out = tmp_path / "intervals.ecsv"
    call_command("export_catalogue", str(out), "--format", "ecsv", "--survey", survey.name, "--model", "gi_morph")
    table = Table.read(out, format="ascii.ecsv")
    for column in ("ml_lo68", "ml_hi68", "ml_lo95", "ml_hi95"):
        assert table[column].unit.to_string() == "solMass / solLum"
    assert str(table["mstar_hi95"].unit) == "solMass"
    odd = table[table["objid"] == 9000000000000000001][0]
    assert odd["out_of_support"] == 1 and "redshift" in odd["support_reasons"]
    fits_out = tmp_path / "intervals.fits"
    call_command("export_catalogue", str(fits_out), "--format", "fits", "--survey", survey.name, "--model", "gi_morph")
    fits_table = Table.read(fits_out)
    assert np.ma.is_masked(fits_table[fits_table["status"] == "rejected"]["out_of_support"][0])  # no prediction: masked
    detail = APIClient().get(f"/api/galaxies/9000000000000000002/?survey={survey.name}").json()
    gi_morph = next(p for p in detail["predictions"] if p["model_name"] == "gi_morph")
    assert gi_morph["out_of_support"] and gi_morph["ml_lo68"] <= gi_morph["ml_pred"] <= gi_morph["ml_hi68"]
    listed = APIClient().get(f"/api/galaxies/?survey={survey.name}&model=gi_morph&page_size=5").json()["results"]
    assert all("ml_hi95" in row and "support_reasons" in row for row in listed)


@pytest.mark.django_db
def test_a_workflow_runs_its_stages_in_order_and_cancelling_it_cancels_the_stage(stages):
    survey, *_ = stages
    # put in pipeline order; forced, since an earlier test already ran both with these inputs
    workflow = start_workflow(survey, ["predict", "gbm"], preset_name="test", force=True)
    assert workflow.status == "succeeded" and workflow.config["stages"] == ["gbm", "predict"]
    children = list(workflow.children.order_by("created"))
    assert [(c.stage, c.status) for c in children] == [("gbm", "succeeded"), ("predict", "succeeded")]
    assert "all 2 stages succeeded" in workflow.message
    with pytest.raises(ValueError, match="stages must be some of"):
        start_workflow(survey, ["dance"])
    # A workflow whose stage is still queued (no worker here): cancelling the workflow cancels the stage.
    from catalogue.celery import app

    app.conf.task_always_eager = False  # inside the test's transaction nothing is sent
    try:
        waiting = start_workflow(survey, ["experiments"], preset_name="test")
    finally:
        app.conf.task_always_eager = True
    child = waiting.children.get()
    assert waiting.status == "running" and child.status in ("queued", "running")
    assert runs.cancel_run(waiting)
    child.refresh_from_db()
    waiting.refresh_from_db()
    assert child.status == "cancelled" and waiting.status == "cancelled"


@pytest.mark.django_db
def test_changing_an_experiment_redoes_experiments_and_adding_a_named_model_redoes_gbm_and_all_after_it(stages, monkeypatch):
    survey, stage_runs, *_ = stages
    model_stages = ["gbm", "experiments", "predict"]

    def run_pipeline() -> Run:
        """The next ``run_pipeline`` of the model stages; returns its workflow."""
        call_command(
            "run_pipeline",
            "--survey",
            survey.name,
            "--preset",
            "test",
            "--stages",
            ",".join(model_stages),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
        return Run.objects.filter(survey=survey, stage="workflow").latest("created")

    same = run_pipeline()
    assert same.status == "succeeded" and same.config["reused"] == {s: stage_runs[s].pk for s in model_stages}

    original = experiments.RUNNERS["half_data"]
    monkeypatch.setitem(experiments.RUNNERS, "half_data", lambda ctx: original(ctx))  # the experiment's code changed
    changed = run_pipeline()
    assert changed.status == "succeeded", changed.message
    assert changed.config["reused"] == {"gbm": stage_runs["gbm"].pk, "predict": stage_runs["predict"].pk}
    assert list(changed.children.values_list("stage", flat=True)) == ["experiments"]

    extra = ModelSpec("lgz_again", "gbm", bands="g")
    monkeypatch.setattr(named_models, "NAMED_MODELS", (*named_models.NAMED_MODELS, extra))  # a seventh named model
    added = run_pipeline()
    assert added.status == "succeeded", added.message
    assert added.config["reused"] == {}
    redone = {run.stage: run for run in added.children.all()}
    assert set(redone) == set(model_stages)
    assert set(TrainedModel.objects.filter(run=redone["gbm"]).values_list("name", flat=True)) == NAMES | {"lgz_again"}
    assert redone["gbm"].chunks.get().items[-1] == "lgz_again"  # items name the models, not their positions
    assert Prediction.objects.filter(model__run=redone["gbm"]).exists()
