"""The adapt stage: a model set made for another instrument, corrected on a few hundred of this survey's targets.

One run on the cpu queue with one chunk whose items are the names of the set's named models.
It reads the survey's features through the set's networks (the features stage run with the
set), draws ``targets`` galaxies from the survey's train and validation splits (seeded; the
test split never: the figures need it), and for each model lets :func:`pipeline.learning.adapt.adapt_estimator`
choose between the model as it is, one factor, and correction trees by cross-validation on
those galaxies; the intervals are recalibrated on their out-of-fold residuals and the
training support extended with them. Each adapted model is stored with its held-out figures
(every galaxy of the learning sample with a target that it was not adapted on: the test split
and the rest of the pool) beside the figures of the set applied as it is on the same galaxies, and when the run
succeeds they become a model set of their own, ``<survey>@<run>``, whose lineage names the
set it was adapted from and on how many targets (:func:`record_adapted_set`).
"""

from __future__ import annotations

import hashlib

import numpy as np
from django.db import transaction

from catalogue.models import ModelSet, Run, Survey, TrainedModel
from catalogue.selectors import features_from, named_models, require_adaptation_targets
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_pickle, save_pickle
from catalogue.services.learning_data import load_learning_data
from catalogue.services.model_sets import record_adapted_set
from pipeline.jsonsafe import json_safe
from pipeline.learning import adapt
from pipeline.learning.data import LearningData, absent_inputs
from pipeline.learning.named_models import NAMED_MODEL_NAMES
from pipeline.learning.regression import FittedModel, calibration_report, score


def plan(
    survey: Survey,
    preset_name: str,  # noqa: ARG001 - the set's preset
    *,
    force: bool = False,  # noqa: ARG001 - every start redoes
    model_set: int | None = None,
    targets: int | None = None,
) -> runs.Plan:
    """One chunk of the set's named models, with the survey's features through the set's networks.

    Raises
    ------
    ValueError
        without a set, without features from its networks, or with too few targets.
    """
    if not model_set:
        raise ValueError("the adapt stage adapts a model set: name it (run_pipeline --survey NAME --models FROM --adapt)")
    chosen = ModelSet.objects.get(pk=model_set)
    n = require_adaptation_targets(survey, targets)
    models = named_models(chosen)
    names = [name for name in NAMED_MODEL_NAMES if name in models]
    return runs.Plan(
        chunks=[names],
        config={
            "model_set": chosen.pk,
            "models": {name: models[name].pk for name in names},
            "feature_sets": features_from(survey, chosen),
            "targets": n,
        },
    )


def inputs() -> dict:
    """The candidates and the adaptation's settings: a change redoes the stage."""
    return {"methods": list(adapt.METHODS), "boost": adapt.BOOST_PARAMS, "min_targets": adapt.MIN_TARGETS}


def adaptation_rows(data: LearningData, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the train and validation splits drawn with the run's seed, and every other row of
    the learning sample with a target (the test split and the pool's rest): the held-out galaxies.

    The two never share a galaxy: the adapted set is fitted and calibrated on the first and
    measured on the second.
    """
    pool = np.concatenate([data.rows("train"), data.rows("val")])
    pool = pool[np.argsort(data.galaxy_ids[pool], kind="stable")]  # an order that does not depend on how rows were read
    chosen = np.sort(np.random.default_rng(seed).permutation(pool)[:n])
    everything = np.concatenate([pool, data.rows("test")])
    return chosen, np.sort(np.setdiff1d(everything, chosen))


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    model_set = ModelSet.objects.select_related("survey").get(pk=run.config["model_set"])
    data, _ = load_learning_data(run.survey, run.config["feature_sets"])
    fit_rows, held_out = adaptation_rows(data, int(run.config["targets"]), runs.seed_of(run))
    if len(fit_rows) < adapt.MIN_TARGETS:
        raise ValueError(
            f"{len(fit_rows)} galaxies with M/L targets are left in the train and validation splits of survey "
            f"{run.survey.name} after preprocessing; adapting needs at least {adapt.MIN_TARGETS}"
        )
    source: dict[tuple, LearningData] = {}
    skipped: dict[str, str] = {}
    names = [str(name) for name in claim.items]
    for position, name in enumerate(names):
        context.check(force=True)
        runs.report_progress(run.pk, position / len(names), f"adapting {name} ({position + 1} of {len(names)})", done=position)
        faults.before_step("adapt", name)
        if TrainedModel.objects.filter(run=run, name=name).exists():
            continue  # stored before a crash: keep it
        model = TrainedModel.objects.get(pk=run.config["models"][name])
        fitted = load_pickle(model.artifact.name)
        lacking = [f"no {column}" for column in absent_inputs(data, fitted.features)]
        rows = fit_rows[data.covered(fitted.spec.groups, fit_rows)]
        if lacking or len(rows) < adapt.MIN_TARGETS:
            why = " and ".join(lacking) or f"{len(rows)} adaptation galaxies with its inputs"
            skipped[name] = f"survey {run.survey.name} has {why}"
            continue
        key = tuple(sorted(model.hyperparameters.get("feature_sets", {}).items()))
        if key not in source:
            source[key] = load_learning_data(model_set.survey, dict(key))[0]
        adapted = adapt_model(fitted, data, rows, source[key], runs.seed_of(run))
        store_adapted(run, model, fitted, adapted, data, held_out)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(names)))
        if skipped:
            run.result = {**run.result, "skipped": skipped}
            Run.objects.filter(pk=run.pk).update(result=run.result)
    return runs.ChunkOutcome(done=len(names))


def adapt_model(fitted: FittedModel, data: LearningData, rows: np.ndarray, source: LearningData, seed: int) -> FittedModel:
    """``fitted`` adapted on ``rows`` of ``data``: the chosen correction, recalibrated intervals, extended support."""
    X = data.matrix(fitted.features, rows)
    estimator, choice, oof = adapt.adapt_estimator(fitted.estimator, X, data.target[rows], data.error[rows], seed=seed)
    choice.galaxy_ids = data.galaxy_ids[rows]
    adapted = FittedModel(fitted.spec, estimator, list(fitted.features), dict(fitted.params), n_train=len(rows))
    adapted.selection = {"adaptation": choice.describe()}
    adapted.intervals = adapt.recalibrate(fitted.intervals, X, data.target[rows], oof, data.morphology[rows])
    source_train, source_val = source.rows("train"), source.rows("val")
    adapted.support = adapt.extend_support(
        source.physical(source_train),
        source.matrix(fitted.features, source_train),
        source.matrix(fitted.features, source_val),
        data.physical(rows),
        X,
        seed=seed,
    )
    adapted.oof = {"galaxy_ids": data.galaxy_ids[rows], "ml": oof}
    adapted.val_metrics = {"l1": choice.cv_l1[choice.method], "n": len(rows), "on": "out-of-fold, adaptation galaxies"}
    adapted.adaptation = choice  # the galaxies it saw, for checks that nothing it was measured on leaked in
    return adapted


def galaxies_digest(ids: np.ndarray) -> str:
    """A short hash of a set of galaxy ids (sorted): what lineage keeps instead of the list."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()[:16]


def store_adapted(run, source_model: TrainedModel, fitted: FittedModel, adapted: FittedModel, data, held_out) -> TrainedModel:
    """Pickle an adapted model and record it with its held-out figures beside those of the model as it was."""
    test = held_out[data.covered(fitted.spec.groups, held_out)]
    metrics: dict = {"val": adapted.val_metrics, "adaptation": adapted.adaptation.describe()}
    if len(test):
        metrics["test"], metrics["test_per_class"], _ = score(adapted, data, test)
        metrics["calibration"] = calibration_report(adapted, data, test)
        as_is_test, _, _ = score(fitted, data, test)
        as_is_calibration = calibration_report(fitted, data, test)
        metrics["as_is"] = {
            "test": as_is_test,
            "coverage_68": as_is_calibration.get("coverage_68"),
            "coverage_95": as_is_calibration.get("coverage_95"),
        }
    metrics["held_out"] = {
        "galaxies": int(len(test)),
        "which": "the learning sample's galaxies with targets, less the adaptation galaxies",
        "galaxies_sha256": galaxies_digest(data.galaxy_ids[test]),
    }
    metrics["adaptation"]["galaxies_sha256"] = galaxies_digest(adapted.adaptation.galaxy_ids)
    name = save_pickle(adapted, f"models/{run.survey.name}/run{run.pk}/{fitted.spec.name}.pkl")
    return TrainedModel.objects.create(
        kind=source_model.kind,
        name=fitted.spec.name,
        survey=run.survey,
        run=run,
        preset=run.preset,
        artifact=name,
        hyperparameters=json_safe(
            {
                **adapted.describe(),
                "feature_sets": run.config["feature_sets"],
                "adapted_from": source_model.pk,
            }
        ),
        metrics=json_safe(metrics),
    )


def record_set(run) -> dict:
    """The adapted models become the model set ``<survey>@<run>``, adapted from the set applied."""
    model_set = record_adapted_set(run)
    return {"model_set": model_set.name if model_set is not None else None}


HOOKS = runs.StageHooks(body=run_chunk, on_finish=record_set)
