"""The body of an experiments run: the paper's seven experiments, each stored as ExperimentResult rows.

The named models of the latest gbm run are loaded (not refitted) and reused where a table
row is one of them. An experiment's rows replace those it stored before in the same run,
in one transaction, so a redelivered run never doubles a table.
"""

from __future__ import annotations

from django.db import transaction

from catalogue.models import ExperimentResult, Split, TrainedModel
from catalogue.services import runs
from catalogue.services.artifacts import load_pickle
from catalogue.services.learning_data import load_learning_data
from pipeline.experiments import EXPERIMENTS, ExperimentContext, ExperimentRow, run_experiment
from pipeline.jsonsafe import json_safe


def run_experiments_body(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    run = claim.run
    names = [EXPERIMENTS[i - 1] for i in claim.items]
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
            runs.report_progress(run.pk, position / len(names), f"{name} ({position + 1} of {len(names)}): {message}")

        step("starting")
        ctx = ExperimentContext(data, dict(named), seed=run.pk, on_step=step)
        rows = run_experiment(name, ctx)
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


EXPERIMENTS_STAGE = runs.StageHooks(body=run_experiments_body)
