"""The body of a gbm run: fit the named M/L models and store them with their metrics.

Each model is pickled (atomically, through storage) and its row written before the next
one is fitted, so a run delivered again after a crash continues with the models missing.
Metrics are stored for the validation and test splits, the test split also per morphology
class, with the permutation importances of the GBMs (the paper's Fig. 5).
"""

from __future__ import annotations

from django.db import transaction

from catalogue.models import TrainedModel
from catalogue.services import runs
from catalogue.services.artifacts import save_pickle
from catalogue.services.learning_data import load_learning_data
from pipeline.jsonsafe import json_safe
from pipeline.learning import LearningData
from pipeline.regression import NAMED_MODELS, FittedModel, fit_model, score

#: Importances kept with a model (the largest), as [name, value] pairs in decreasing order
#: (a list: PostgreSQL's jsonb does not keep a dict's key order).
IMPORTANCES_KEPT = 200


def train_gbm_body(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    specs = [NAMED_MODELS[i - 1] for i in claim.items]
    todo = [s for s in specs if not TrainedModel.objects.filter(run=run, name=s.name).exists()]
    data, set_ids = load_learning_data(run.survey, run.config["feature_sets"]) if todo else (None, {})
    for position, spec in enumerate(specs):
        if spec not in todo:
            continue  # stored before a crash: keep it
        context.check(force=True)
        runs.report_progress(run.pk, position / len(specs), f"fitting {spec.name} ({position + 1} of {len(specs)})")
        grid = run.config["gbm"]["grid"] if spec.method == "gbm" and spec.loss == "l1" else None
        fitted = fit_model(spec, data, params=run.config["gbm"]["params"], grid=grid, seed=run.pk)
        store_model(run, fitted, data, set_ids)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(specs)))
    return runs.ChunkOutcome(done=len(specs))


def store_model(run, fitted: FittedModel, data: LearningData, feature_set_ids: dict[str, int]) -> TrainedModel:
    """Pickle a fitted model and record it with its validation and test metrics."""
    test = data.rows("test")
    test_metrics, per_class, _ = score(fitted, data, test) if len(test) else ({}, {}, None)
    ranked = sorted(fitted.importance.items(), key=lambda item: -item[1])[:IMPORTANCES_KEPT]
    name = save_pickle(fitted, f"models/{run.survey.name}/run{run.pk}/{fitted.spec.name}.pkl")
    kind = TrainedModel.Kind.GBM if fitted.spec.method == "gbm" else TrainedModel.Kind.BASELINE
    return TrainedModel.objects.create(
        kind=kind, name=fitted.spec.name, survey=run.survey, run=run, preset=run.preset, artifact=name,
        hyperparameters=json_safe({**fitted.describe(), "feature_sets": feature_set_ids}),
        metrics=json_safe({"val": fitted.val_metrics, "test": test_metrics, "test_per_class": per_class,
                           "permutation_importance": [list(item) for item in ranked]}),
    )  # fmt: skip


GBM_STAGE = runs.StageHooks(body=train_gbm_body)
