"""The predict stage: every galaxy of a survey through each named model, into Prediction rows.

One run on the cpu queue with one chunk whose items are the names of the models to predict
with: those of a model set, recorded by id in the run's config. By default the set is the
one the survey's latest successful gbm run made; with ``model_set`` it is any set, trained
on another survey, and the features are this survey's from that set's networks (the
features stage run with the same ``model_set``). A model whose catalogue inputs the survey
lacks altogether (no ``mag_i``: ``gi``, ``gi_morph``, ``powerlaw_gi``, ``gi_images``), or
whose CNN4-on-colour features no galaxy has (no i images: ``gi_images``), is skipped with
that reason in the run's result; the others predict.
All splits and galaxies without targets are predicted (the catalogue is the point), with
the stellar mass the M/L implies (M/L x L_g, in Msun). Rows are upserted per (galaxy,
model) in batches, so a redelivered run rewrites the same rows. A galaxy a model cannot
predict (a power law without a g - i colour, a non-positive GBM output) gets no row and is
counted in the run's result. Each galaxy's morphology class (CNN1's probabilities through
the paper's thresholds) is recorded on the galaxy, for the catalogue's filters and pages.
"""

from __future__ import annotations

import numpy as np
from django.db import transaction

from catalogue.columns import INTERVAL_COLUMNS
from catalogue.models import Galaxy, ModelSet, Prediction, Run, Survey, TrainedModel
from catalogue.selectors import features_from, latest_named_models, named_models
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.learning_data import load_learning_data
from pipeline.jsonsafe import json_safe
from pipeline.learning.data import absent_inputs
from pipeline.learning.named_models import CATALOGUE_MODEL, NAMED_MODEL_NAMES
from pipeline.learning.regression import calibration_report

BATCH = 5_000
#: Galaxies with targets needed to report the intervals' coverage on an applied survey.
MIN_COVERAGE_GALAXIES = 20


def plan(survey: Survey, preset_name: str, *, force: bool = False, model_set: int | None = None) -> runs.Plan:  # noqa: ARG001
    """One chunk of the named models of a set: the survey's own latest, or the set with id ``model_set``.

    Raises
    ------
    ValueError
        when no gbm run has finished on the survey (and no set is given), or when the
        survey has no features from the given set's networks.
    """
    if model_set:
        chosen = ModelSet.objects.get(pk=model_set)
        models = named_models(chosen)
        config = {"model_set": chosen.pk, "feature_sets": features_from(survey, chosen)}
    else:
        models = latest_named_models(survey)
        chosen = models[CATALOGUE_MODEL].model_set
        config = {"model_set": chosen.pk} if chosen is not None else {}
    names = [n for n in NAMED_MODEL_NAMES if n in models]  # gi_images only where the set has it
    return runs.Plan(chunks=[names], config={"models": {n: models[n].pk for n in names}, **config})


def inputs() -> dict:
    """Nothing beyond the gbm run it reads: the registry's version stands for the code."""
    return {}


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    model_ids = [run.config["models"][str(name)] for name in claim.items]
    loaded: dict[tuple, object] = {}
    unpredicted: dict[str, int] = {}
    flagged: dict[str, int] = {}
    skipped: dict[str, str] = {}
    coverage: dict[str, dict] = {}
    for position, model_id in enumerate(model_ids):
        model = TrainedModel.objects.get(pk=model_id)
        context.check(force=True)
        message = f"predicting with {model.name} ({position + 1} of {len(model_ids)})"
        runs.report_progress(run.pk, position / len(model_ids), message, done=position)
        faults.before_step("predict", model.name)
        feature_sets = run.config.get("feature_sets") or model.hyperparameters["feature_sets"]
        key = tuple(sorted(feature_sets.items()))
        if key not in loaded:
            loaded[key] = load_learning_data(run.survey, dict(key))[0]
        fitted = load_pickle(model.artifact.name)
        lacking = [f"no {column}" for column in absent_inputs(loaded[key], fitted.features)]
        if not loaded[key].covered(fitted.spec.groups).any():
            lacking.append("no i images (CNN4 on colour)")
        if lacking:
            skipped[model.name] = f"survey {run.survey.name} has {' and '.join(lacking)}"
            continue
        unpredicted[model.name], flagged[model.name] = store_predictions(model, fitted, loaded[key], context)
        if model.survey_id != run.survey_id:
            coverage[model.name] = coverage_on_targets(fitted, loaded[key])
    for data in loaded.values():
        store_morphology(data)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(model_ids)))
        run.result = {**run.result, "unpredicted": unpredicted, "flagged": flagged, "skipped": skipped}
        if any(coverage.values()):
            run.result["calibration"] = json_safe(coverage)
        if run.config.get("model_set"):
            run.result["model_set"] = ModelSet.objects.values_list("name", flat=True).get(pk=run.config["model_set"])
        Run.objects.filter(pk=run.pk).update(result=run.result)
    return runs.ChunkOutcome(done=len(model_ids))


def store_predictions(model: TrainedModel, fitted, data, context: runs.ChunkContext | None = None) -> tuple[int, int]:
    """Upsert the model's prediction for every galaxy of ``data``.

    Returns how many galaxies it could not predict and how many of its predictions are
    flagged outside the training selection.
    """
    u = fitted.uncertainty(data)
    predicted = u["ml"]
    usable = np.isfinite(predicted) & (predicted > 0)

    def value(name: str, i: int) -> float | None:
        v = u[name][i]
        return float(v) if np.isfinite(v) else None

    for start in range(0, len(predicted), BATCH):
        if context is not None:
            context.check()
        rows = [
            Prediction(
                galaxy_id=int(data.galaxy_ids[i]),
                model=model,
                ml_pred=float(predicted[i]),
                mstar_pred=value("mstar", i),
                out_of_support=bool(u["reasons"][i]),
                support_reasons=u["reasons"][i],
                **{c: value(c, i) for c in INTERVAL_COLUMNS},
            )
            for i in range(start, min(start + BATCH, len(predicted)))
            if usable[i]
        ]
        Prediction.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["galaxy", "model"],
            update_fields=["ml_pred", "mstar_pred", "out_of_support", "support_reasons", *INTERVAL_COLUMNS],
        )
    n_flagged = sum(1 for i in np.flatnonzero(usable) if u["reasons"][i])
    return int((~usable).sum()), n_flagged


def coverage_on_targets(fitted, data) -> dict:
    """On a survey a set was applied to, the intervals' coverage where its galaxies have targets
    (none of them trained the model); empty without targets.

    Only the survey's learning sample counts: the galaxies its selection excluded keep their
    targets, but those are the ones it judged unreliable (an SED fit with chi2_r >= 5), and
    measuring intervals against them moved a 95% coverage from 0.946 to 0.926 (gi_morph,
    4,000 simulated galaxies, 162 excluded).
    """
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(data.target) & (data.target > 0) & np.isfinite(data.error)
    rows = np.flatnonzero(usable & (data.split != ""))
    return calibration_report(fitted, data, rows) if len(rows) >= MIN_COVERAGE_GALAXIES else {}


def store_morphology(data) -> None:
    """Record each galaxy's morphology class (from CNN1's probabilities) for filters and pages."""
    for name in sorted(set(data.morphology)):
        ids = data.galaxy_ids[data.morphology == name].tolist()
        for start in range(0, len(ids), BATCH):
            Galaxy.objects.filter(pk__in=ids[start : start + BATCH]).exclude(morphology=name).update(morphology=name)


HOOKS = runs.StageHooks(body=run_chunk)
