"""The gbm, experiments and predict stages on an ingested synthetic survey (test preset), the
catalogue export with predictions, and the whole chain through real workers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from astropy.table import Table
from django.core.management import CommandError, call_command
from django.db.models import Count

from catalogue.models import ExperimentResult, FeatureSet, Galaxy, Prediction, Run, Survey, TrainedModel
from catalogue.services import runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.cnn_runs import start_cnn_run
from catalogue.services.feature_runs import start_features_run
from catalogue.services.gbm_runs import start_experiments_run, start_gbm_run, start_predict_run
from catalogue.services.ingest import ingest_bundle
from catalogue.services.learning_data import load_learning_data
from catalogue.services.prediction_stage import PREDICT_STAGE
from catalogue.services.preprocess_runs import start_preprocess_run
from pipeline import units
from pipeline.experiments import EXPERIMENTS
from pipeline.regression import NAMED_MODELS

NAMES = {spec.name for spec in NAMED_MODELS}


@pytest.fixture(scope="module")
def modelled(django_db_setup, django_db_blocker, synthetic_bundle, tmp_path_factory):  # noqa: ARG001 - ordering
    """A synthetic survey through every stage with the test preset (eager Celery)."""
    from django.conf import settings

    media = tmp_path_factory.mktemp("gbm-media")
    old_media, settings.MEDIA_ROOT = settings.MEDIA_ROOT, media
    with django_db_blocker.unblock():
        ingest_bundle(synthetic_bundle, "gbm")
        survey = Survey.objects.get(name="gbm")
        start_preprocess_run(survey, preset_name="test")
        start_cnn_run(survey, preset_name="test")
        features = start_features_run(survey, preset_name="test")
        stage_runs = {
            "features": features,
            "gbm": start_gbm_run(survey, preset_name="test"),
            "experiments": start_experiments_run(survey, preset_name="test"),
            "predict": start_predict_run(survey, preset_name="test"),
        }
        yield survey, stage_runs, media
        Survey.objects.filter(pk=survey.pk).delete()
    settings.MEDIA_ROOT = old_media


@pytest.fixture
def stages(modelled, settings):
    settings.MEDIA_ROOT = modelled[2]
    return modelled


@pytest.mark.django_db
def test_the_gbm_stage_stores_the_six_named_models(stages):
    survey, stage_runs, _ = stages
    run = Run.objects.get(pk=stage_runs["gbm"].pk)
    assert run.status == "succeeded", run.error or run.message
    models = {m.name: m for m in TrainedModel.objects.filter(run=run)}
    assert set(models) == NAMES
    assert {m.kind for n, m in models.items() if n in {"constant", "powerlaw_gi"}} == {"baseline"}
    features_sets = dict(FeatureSet.objects.filter(run=stage_runs["features"]).values_list("name", "pk"))
    data, _ = load_learning_data(survey, features_sets)
    test = data.rows("test")
    for name, model in models.items():
        assert model.preset == "test" and model.artifact.name.endswith(".pkl")
        assert model.hyperparameters["feature_sets"] == features_sets  # the features it read, by version
        assert model.metrics["test"]["n"] == len(test) > 5 and model.metrics["val"]["l1"] > 0
        fitted = load_pickle(model.artifact.name)
        predicted = fitted.predict(data, test)
        l1 = np.mean(np.abs(predicted - data.target[test]) / np.maximum(data.error[test], 0.05 * data.target[test]))
        assert l1 == pytest.approx(model.metrics["test"]["l1"], rel=1e-6), name  # the stored metric is the model's
    importance = models["gi"].metrics["permutation_importance"]
    assert [n for n, _ in importance] and importance == sorted(importance, key=lambda item: -item[1])
    assert set(models["g_morph"].metrics["test_per_class"]) <= {"irregular", "edge-on", "disk", "elliptical"}
    assert "L_g/L_i" in models["gi"].hyperparameters["features"]
    assert models["g_morph"].hyperparameters["selection"]["top_k"] == 50


@pytest.mark.django_db
def test_the_experiments_stage_stores_every_table(stages):
    survey, stage_runs, _ = stages
    run = Run.objects.get(pk=stage_runs["experiments"].pk)
    assert run.status == "succeeded", run.error or run.message
    rows = ExperimentResult.objects.filter(run=run, survey=survey)
    counts = {name: rows.filter(experiment=name).count() for name in EXPERIMENTS}
    assert counts == {
        "single_band": 3,
        "ablation": 6,
        "colour": 3,
        "losses": 9,
        "band_sets": 10,
        "significance": 2,
        "half_data": 2,
    }
    significance = rows.get(experiment="significance", method="gi_morph over gi")
    assert 0 <= significance.details["ks_pvalue"] <= 1 and significance.details["bootstrap_resamples"] == 100_000
    assert {r.loss for r in rows.filter(experiment="losses")} == {"l1", "l2", "rmsle"}
    # Rows that are named models carry the named model's own test metric.
    g_morph = TrainedModel.objects.get(run=stage_runs["gbm"], name="g_morph")
    assert rows.get(experiment="single_band", method="g_morph").l1 == pytest.approx(g_morph.metrics["test"]["l1"])


@pytest.mark.django_db
def test_the_predict_stage_predicts_every_galaxy_with_its_stellar_mass(stages):
    survey, stage_runs, _ = stages
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
    runs.execute_chunk(chunk.pk, "again", PREDICT_STAGE)
    assert Prediction.objects.filter(model=model).count() == before


@pytest.mark.django_db
def test_export_adds_predictions_with_units(stages, tmp_path):
    survey, stage_runs, _ = stages
    out = tmp_path / "catalogue.fits"
    call_command("export_catalogue", str(out), "--format", "fits", "--survey", survey.name, "--model", "gi_morph")
    table = Table.read(out)
    assert table["ml_pred"].unit.to_string() == units.MASS_TO_LIGHT and str(table["mstar_pred"].unit) == "solMass"
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
        start_gbm_run(survey, preset_name="test")
    with pytest.raises(ValueError, match="run the gbm stage first"):
        start_experiments_run(survey, preset_name="test")
    with pytest.raises(CommandError, match="run the gbm stage first"):
        call_command("run_pipeline", "--survey", "bare", "--preset", "test", "--stages", "predict")
    assert not Run.objects.filter(survey=survey).exists()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_whole_chain_runs_through_real_workers(synthetic_bundle, celery_workers):
    """Every stage of the test preset, each on its queue's worker process."""
    ingest_bundle(synthetic_bundle, "chain")
    survey = Survey.objects.get(name="chain")

    def finish(run: Run, timeout: float = 300) -> Run:
        deadline = time.monotonic() + timeout
        while run.status in Run.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)
            run.refresh_from_db()
        assert run.status == "succeeded", f"{run.stage}: {run.status} {run.message} {run.error}"
        return run

    queues = {"preprocess": "cpu", "cnn": "gpu", "features": "gpu", "gbm": "cpu", "experiments": "cpu", "predict": "cpu"}
    starts = {"preprocess": start_preprocess_run, "cnn": start_cnn_run, "features": start_features_run,
              "gbm": start_gbm_run, "experiments": start_experiments_run, "predict": start_predict_run}  # fmt: skip
    for stage, start in starts.items():
        run = finish(start(survey, preset_name="test"))
        assert {c.worker.split()[0] for c in run.chunks.all()} == {celery_workers[queues[stage]]}, stage
    assert Prediction.objects.filter(galaxy__survey=survey, model__name="g_morph").count() > 150
    assert ExperimentResult.objects.filter(survey=survey).count() == 35


@pytest.mark.django_db
def test_run_pipeline_runs_the_model_stages(stages, capsys):
    survey = stages[0]
    call_command("run_pipeline", "--survey", survey.name, "--preset", "test", "--stages", "gbm,predict")
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["stages"]["gbm"]["status"] == summary["stages"]["predict"]["status"] == "succeeded"
    assert summary["stages"]["gbm"]["done"] == 6
