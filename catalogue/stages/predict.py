"""The predict stage: every galaxy of a survey through each named model, into Prediction rows.

One run on the cpu queue with one chunk whose items are the names of the models to predict
with (those of the survey's latest successful gbm run, recorded by id in the run's config).
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
from catalogue.models import Galaxy, Prediction, Survey, TrainedModel
from catalogue.selectors import NAMED_MODEL_NAMES, latest_named_models
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.learning_data import load_learning_data

BATCH = 5_000


def plan(survey: Survey, preset_name: str, *, force: bool = False) -> runs.Plan:  # noqa: ARG001 - every start redoes
    """One chunk of the survey's latest named models.

    Raises
    ------
    ValueError
        when no gbm run has finished on the survey.
    """
    models = latest_named_models(survey)
    return runs.Plan(chunks=[list(NAMED_MODEL_NAMES)], config={"models": {n: models[n].pk for n in NAMED_MODEL_NAMES}})


def inputs() -> dict:
    """Nothing beyond the gbm run it reads: the registry's version stands for the code."""
    return {}


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    model_ids = [run.config["models"][str(name)] for name in claim.items]
    loaded: dict[tuple, object] = {}
    unpredicted: dict[str, int] = {}
    for position, model_id in enumerate(model_ids):
        model = TrainedModel.objects.get(pk=model_id)
        context.check(force=True)
        message = f"predicting with {model.name} ({position + 1} of {len(model_ids)})"
        runs.report_progress(run.pk, position / len(model_ids), message, done=position)
        faults.before_step("predict", model.name)
        key = tuple(sorted(model.hyperparameters["feature_sets"].items()))
        if key not in loaded:
            loaded[key] = load_learning_data(run.survey, dict(key))[0]
        unpredicted[model.name] = store_predictions(model, load_pickle(model.artifact.name), loaded[key], context)
    for data in loaded.values():
        store_morphology(data)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(model_ids)))
        run.result = {**run.result, "unpredicted": unpredicted}
        type(run).objects.filter(pk=run.pk).update(result=run.result)
    return runs.ChunkOutcome(done=len(model_ids))


def store_predictions(model: TrainedModel, fitted, data, context: runs.ChunkContext | None = None) -> int:
    """Upsert the model's prediction for every galaxy of ``data``; returns how many it could not predict."""
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
    return int((~usable).sum())


def store_morphology(data) -> None:
    """Record each galaxy's morphology class (from CNN1's probabilities) for filters and pages."""
    for name in sorted(set(data.morphology)):
        ids = data.galaxy_ids[data.morphology == name].tolist()
        for start in range(0, len(ids), BATCH):
            Galaxy.objects.filter(pk__in=ids[start : start + BATCH]).exclude(morphology=name).update(morphology=name)


HOOKS = runs.StageHooks(body=run_chunk)
