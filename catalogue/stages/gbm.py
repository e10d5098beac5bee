"""The gbm stage: fit the named M/L models on the survey's latest CNN features and store them.

One run on the cpu queue with one chunk whose items are the names of the models to fit
(:data:`pipeline.learning.named_models.NAMED_MODELS`, less ``gi_images`` on a survey without CNN4-on-colour
features, recorded in the run's config as skipped); the models' specifications enter the
stage's inputs, so adding or changing a named model redoes the stage.

Each model is pickled (atomically, through storage) and its row written before the next
one is fitted, so a run delivered again after a crash continues with the models missing.
Metrics are stored for the validation and test splits, the test split also per morphology
class, with the permutation importances of the GBMs (the paper's Fig. 5). When the run
succeeds its models and the networks they read become a model set (``<survey>@<run>``),
which can be applied to other surveys.
"""

from __future__ import annotations

from dataclasses import asdict

from django.db import transaction

from catalogue.models import Survey, TrainedModel
from catalogue.selectors import latest_feature_sets, require_targets
from catalogue.services import faults, runs
from catalogue.services.artifacts import save_pickle
from catalogue.services.learning_data import load_learning_data
from catalogue.services.model_sets import record_model_set
from pipeline.jsonsafe import json_safe
from pipeline.learning import named_models
from pipeline.learning.data import LearningData
from pipeline.learning.regression import FittedModel, calibration_report, fit_model, score
from pipeline.presets import CNN_GROUP_SETS, OPTIONAL_GROUPS, gbm_grid, preset

#: Importances kept with a model (the largest), as [name, value] pairs in decreasing order
#: (a list: PostgreSQL's jsonb does not keep a dict's key order).
IMPORTANCES_KEPT = 200


def plan(survey: Survey, preset_name: str, *, force: bool = False) -> runs.Plan:  # noqa: ARG001 - every start redoes
    """One chunk of the named models, on the feature sets of the survey's latest features run.

    Raises
    ------
    ValueError
        for an unknown preset, a survey without M/L targets or without complete CNN features.
    """
    config = preset(preset_name)
    require_targets(survey)
    sets = latest_feature_sets(survey)
    absent = [g for g in OPTIONAL_GROUPS if not all(name in sets for name in CNN_GROUP_SETS[g])]
    specs = named_models.fittable(named_models.NAMED_MODELS, absent)
    skipped = {
        spec.name: f"survey {survey.name} has no {', '.join(sorted(set(spec.groups) & set(absent)))} features (no i images)"
        for spec in named_models.NAMED_MODELS
        if spec not in specs
    }
    return runs.Plan(
        chunks=[[spec.name for spec in specs]],
        config={
            "gbm": {"params": config["gbm"]["params"], "grid": gbm_grid(config)},
            "feature_sets": {name: fs.pk for name, fs in sets.items()},
            **({"skipped": skipped} if skipped else {}),
        },
    )


def inputs() -> dict:
    """The named models' specifications: what each learns from and how."""
    return {"named_models": [asdict(spec) for spec in named_models.NAMED_MODELS]}


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    named = {spec.name: spec for spec in named_models.NAMED_MODELS}
    specs = [named[str(name)] for name in claim.items]
    todo = [s for s in specs if not TrainedModel.objects.filter(run=run, name=s.name).exists()]
    data, set_ids = load_learning_data(run.survey, run.config["feature_sets"]) if todo else (None, {})
    for position, spec in enumerate(specs):
        if spec not in todo:
            continue  # stored before a crash: keep it
        context.check(force=True)
        message = f"fitting {spec.name} ({position + 1} of {len(specs)})"
        runs.report_progress(run.pk, position / len(specs), message, done=position)
        faults.before_step("gbm", spec.name)
        grid = run.config["gbm"]["grid"] if spec.method == "gbm" and spec.loss == "l1" else None
        fitted = fit_model(spec, data, params=run.config["gbm"]["params"], grid=grid, seed=runs.seed_of(run))
        store_model(run, fitted, data, set_ids)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(specs)))
    return runs.ChunkOutcome(done=len(specs))


def store_model(run, fitted: FittedModel, data: LearningData, feature_set_ids: dict[str, int]) -> TrainedModel:
    """Pickle a fitted model and record it with its validation and test metrics."""
    test = data.rows("test")
    test_metrics, per_class, _ = score(fitted, data, test) if len(test) else ({}, {}, None)
    calibration = calibration_report(fitted, data, test) if len(test) else {}
    ranked = sorted(fitted.importance.items(), key=lambda item: -item[1])[:IMPORTANCES_KEPT]
    name = save_pickle(fitted, f"models/{run.survey.name}/run{run.pk}/{fitted.spec.name}.pkl")
    kind = TrainedModel.Kind.GBM if fitted.spec.method == "gbm" else TrainedModel.Kind.BASELINE
    return TrainedModel.objects.create(
        kind=kind,
        name=fitted.spec.name,
        survey=run.survey,
        run=run,
        preset=run.preset,
        artifact=name,
        hyperparameters=json_safe({**fitted.describe(), "feature_sets": feature_set_ids}),
        metrics=json_safe(
            {
                "val": fitted.val_metrics,
                "test": test_metrics,
                "test_per_class": per_class,
                "permutation_importance": [list(item) for item in ranked],
                "calibration": calibration,
            }
        ),
    )


def record_set(run) -> dict:
    """The run's named models and the networks they read become the model set ``<survey>@<run>``."""
    model_set = record_model_set(run)
    return {"model_set": model_set.name if model_set is not None else None}


HOOKS = runs.StageHooks(body=run_chunk, on_finish=record_set)
