"""The pipeline's stages by name, one way to start any of them (shared by the CLI, the API
and the admin), and what each stage's result depends on.

A stage's *inputs* are the preset's settings, the survey's galaxies and the runs of the
stages before it that it reads. Every started run records them in ``config["inputs"]``,
so a workflow run again after a failure or a cancellation reuses a stage that already
succeeded with the same inputs and redoes one whose inputs changed (another preset, new
galaxies, a stage upstream redone).
"""

from __future__ import annotations

import hashlib
import json

from django.db import transaction
from django.db.models import Count, Max

from catalogue.models import Galaxy, Run, Survey
from catalogue.services.cnn_runs import start_cnn_run
from catalogue.services.feature_runs import start_features_run
from catalogue.services.gbm_runs import start_experiments_run, start_gbm_run, start_predict_run
from catalogue.services.preprocess_runs import start_preprocess_run
from pipeline.presets import preset

STAGES = {
    "preprocess": start_preprocess_run,
    "cnn": start_cnn_run,
    "features": start_features_run,
    "gbm": start_gbm_run,
    "experiments": start_experiments_run,
    "predict": start_predict_run,
}
#: stage -> the stages whose results it reads (through them, everything before).
READS = {
    "preprocess": (),
    "cnn": ("preprocess",),
    "features": ("preprocess", "cnn"),
    "gbm": ("features",),
    "experiments": ("gbm",),
    "predict": ("gbm",),
}


def start_stage(
    stage: str, survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None
) -> Run:
    """Start one stage on a survey, recording its inputs on the run.

    Raises
    ------
    ValueError
        for an unknown stage or preset, or when the stage's inputs are missing (the message says which).
    RunConflict
        when the stage is already running on the survey.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    inputs = stage_inputs(stage, survey, preset_name)
    run = STAGES[stage](survey, preset_name=preset_name, force=force, user=user, parent=parent)
    with transaction.atomic():  # merged: the stage's own start may have added to the config
        config = Run.objects.select_for_update().values_list("config", flat=True).get(pk=run.pk)
        Run.objects.filter(pk=run.pk).update(config={**config, "inputs": inputs})
    run.refresh_from_db()
    return run


def stage_inputs(stage: str, survey: Survey, preset_name: str) -> dict:
    """What a run of ``stage`` started now would depend on (JSON, compared as a whole).

    ``upstream`` names the newest successful run on the survey of each stage it
    :data:`READS`. ``galaxies`` is their count and highest id, so an
    ingest of more galaxies changes it.
    """
    settings = json.dumps(preset(preset_name), sort_keys=True, default=str)
    galaxies = Galaxy.objects.filter(survey=survey).aggregate(n=Count("id"), last=Max("id"))
    upstream = {}
    for earlier in READS[stage]:
        latest = (
            Run.objects.filter(survey=survey, stage=earlier, status=Run.Status.SUCCEEDED)
            .order_by("-finished", "-pk")
            .values_list("pk", flat=True)
            .first()
        )
        upstream[earlier] = latest
    return {
        "preset": preset_name,
        "settings": hashlib.sha256(settings.encode()).hexdigest()[:16],
        "galaxies": [galaxies["n"], galaxies["last"]],
        "upstream": upstream,
    }


def reusable_run(stage: str, survey: Survey, preset_name: str) -> Run | None:
    """The newest successful run of ``stage`` whose inputs equal what a new run would have, if any."""
    inputs = stage_inputs(stage, survey, preset_name)
    candidates = Run.objects.filter(survey=survey, stage=stage, status=Run.Status.SUCCEEDED).order_by("-finished", "-pk")
    return next((run for run in candidates[:20] if run.config.get("inputs") == inputs), None)
