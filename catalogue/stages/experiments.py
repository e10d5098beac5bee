"""The experiments stage: the paper's seven experiments, each stored as ExperimentResult rows.

One run on the cpu queue with one chunk whose items are the experiments' names. The named
models of the survey's latest gbm run are loaded (not refitted) and reused where a table
row is one of them. An experiment's rows replace those it stored before in the same run,
in one transaction, so a redelivered run never doubles a table. The source of each
experiment's function enters the stage's inputs: changing an experiment redoes the stage.
"""

from __future__ import annotations

import hashlib
import inspect

from django.db import transaction

from catalogue.models import ExperimentResult, Split, Survey, TrainedModel
from catalogue.selectors import latest_named_models
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.learning_data import load_learning_data
from pipeline.jsonsafe import json_safe
from pipeline.learning import experiments
from pipeline.learning.experiments import ExperimentContext, ExperimentRow


def plan(survey: Survey, preset_name: str, *, force: bool = False) -> runs.Plan:  # noqa: ARG001 - every start redoes
    """One chunk of the seven experiments, reusing the survey's latest named models.

    Raises
    ------
    ValueError
        when no gbm run has finished on the survey.
    """
    models = latest_named_models(survey)
    return runs.Plan(
        chunks=[list(experiments.EXPERIMENTS)],
        config={"models": {n: m.pk for n, m in models.items()}, "experiments": list(experiments.EXPERIMENTS)},
    )


def inputs() -> dict:
    """Each experiment by name with a hash of its function's source."""
    return {name: _source_hash(experiments.RUNNERS[name]) for name in experiments.EXPERIMENTS}


def _source_hash(function) -> str:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # no source (a builtin, a frozen module): its qualified name stands for it
        source = f"{function.__module__}.{function.__qualname__}"
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    names = [str(name) for name in claim.items]
    todo = [n for n in names if not ExperimentResult.objects.filter(run=run, experiment=n).exists()]
    if not todo:
        with transaction.atomic():
            runs.complete_chunk(claim, runs.ChunkOutcome(done=len(names)))
        return runs.ChunkOutcome(done=len(names))
    models = TrainedModel.objects.filter(pk__in=run.config["models"].values())
    named = {m.name: load_pickle(m.artifact.name) for m in models}
    feature_sets = next(iter(models)).hyperparameters["feature_sets"]
    data, _ = load_learning_data(run.survey, feature_sets)
    for position, name in enumerate(names):
        if name not in todo:
            continue

        def step(message: str, position=position, name=name) -> None:
            context.check(force=True)
            text = f"{name} ({position + 1} of {len(names)}): {message}"
            runs.report_progress(run.pk, position / len(names), text, done=position)

        step("starting")
        faults.before_step("experiments", name)
        ctx = ExperimentContext(data, dict(named), seed=runs.seed_of(run), on_step=step)
        rows = experiments.run_experiment(name, ctx)
        with transaction.atomic():
            ExperimentResult.objects.filter(run=run, experiment=name).delete()
            ExperimentResult.objects.bulk_create([_result(run, row) for row in rows])
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(names)))
    return runs.ChunkOutcome(done=len(names))


def _result(run, row: ExperimentRow) -> ExperimentResult:
    m = row.metrics
    return ExperimentResult(
        experiment=row.experiment,
        method=row.method,
        feature_groups=row.feature_groups,
        loss=row.loss,
        split=Split.TEST,
        l1=m["l1"],
        l2=m["l2"],
        rmsle=m["rmsle"],
        median_l1=m["median_l1"],
        within_015_dex=m["within_015_dex"],
        n=m["n"],
        per_class=json_safe(row.per_class),
        details=json_safe({**row.details, "n_unpredicted": m.get("n_unpredicted", 0)}),
        survey=run.survey,
        run=run,
    )


HOOKS = runs.StageHooks(body=run_chunk)
