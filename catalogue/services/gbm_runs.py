"""Start the M/L stages on the cpu queue: ``gbm`` (the named models), ``experiments`` and ``predict``.

Each is one run with one chunk whose items are its steps (the six named models, the
seven experiments, the models to predict with), so a redelivered run continues with the
steps not yet stored. All three read the CNN features of one features run: ``gbm``
records which, and ``experiments`` and ``predict`` use the named models of the survey's
latest successful ``gbm`` run, with the feature sets those models were trained on.
"""

from __future__ import annotations

from catalogue.models import Run, RunStage, Survey, TrainedModel
from catalogue.services import runs
from catalogue.services.learning_data import latest_feature_sets
from pipeline.experiments import EXPERIMENTS
from pipeline.presets import gbm_grid, preset
from pipeline.regression import NAMED_MODELS

GBM_TASK = "pipeline.tasks.train_gbm"
EXPERIMENTS_TASK = "pipeline.tasks.run_experiments"
PREDICT_TASK = "pipeline.tasks.predict_catalogue"
NAMED_MODEL_NAMES = tuple(spec.name for spec in NAMED_MODELS)


def _start(
    stage: str, survey: Survey, steps: int, task: str, *, preset_name: str, config: dict, user, parent, task_id: str
) -> Run:
    existing = runs.active_run(survey, stage)
    if existing is not None:
        raise runs.RunConflict(existing)
    run = runs.create_run(
        stage, survey, [list(range(1, steps + 1))], preset=preset_name, config=config, user=user, parent=parent, task_id=task_id
    )
    runs.enqueue_chunks(run, task)
    run.refresh_from_db()
    return run


def start_gbm_run(
    survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None, task_id: str = ""
) -> Run:
    """Queue the training of the named M/L models on the survey's latest CNN features.

    Raises
    ------
    ValueError
        for an unknown preset, or a survey without complete CNN features.
    RunConflict
        when a gbm run is already active on the survey.
    """
    config = preset(preset_name)
    sets = latest_feature_sets(survey)
    gbm = {"params": config["gbm"]["params"], "grid": gbm_grid(config)}
    return _start(
        RunStage.GBM,
        survey,
        len(NAMED_MODELS),
        GBM_TASK,
        preset_name=preset_name,
        user=user,
        parent=parent,
        task_id=task_id,
        config={"gbm": gbm, "feature_sets": {name: fs.pk for name, fs in sets.items()}, "force": force},
    )


def latest_named_models(survey: Survey) -> dict[str, TrainedModel]:
    """The named M/L models of the survey's latest successful gbm run.

    Raises
    ------
    ValueError
        when no gbm run has finished on the survey.
    """
    run = Run.objects.filter(survey=survey, stage=RunStage.GBM, status=Run.Status.SUCCEEDED).order_by("-finished", "-pk").first()
    found = {m.name: m for m in TrainedModel.objects.filter(run=run, name__in=NAMED_MODEL_NAMES)} if run else {}
    if len(found) < len(NAMED_MODEL_NAMES):
        raise ValueError(f"survey {survey.name} has no trained M/L models yet; run the gbm stage first")
    return found


def start_experiments_run(
    survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None, task_id: str = ""
) -> Run:
    """Queue the paper's seven experiments, reusing the survey's latest named models."""
    models = latest_named_models(survey)
    return _start(
        RunStage.EXPERIMENTS,
        survey,
        len(EXPERIMENTS),
        EXPERIMENTS_TASK,
        preset_name=preset_name,
        user=user,
        parent=parent,
        task_id=task_id,
        config={"models": {n: m.pk for n, m in models.items()}, "experiments": list(EXPERIMENTS), "force": force},
    )


def start_predict_run(
    survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None, task_id: str = ""
) -> Run:
    """Queue catalogue predictions of every galaxy of the survey with its latest named models."""
    models = latest_named_models(survey)
    return _start(
        RunStage.PREDICT,
        survey,
        len(models),
        PREDICT_TASK,
        preset_name=preset_name,
        user=user,
        parent=parent,
        task_id=task_id,
        config={"models": [models[n].pk for n in NAMED_MODEL_NAMES], "force": force},
    )
