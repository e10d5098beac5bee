"""The pipeline's stages by name, and one way to start any of them: shared by the CLI, the API and the admin."""

from __future__ import annotations

from catalogue.models import Run, Survey
from catalogue.services.cnn_runs import start_cnn_run
from catalogue.services.feature_runs import start_features_run
from catalogue.services.gbm_runs import start_experiments_run, start_gbm_run, start_predict_run
from catalogue.services.preprocess_runs import start_preprocess_run

STAGES = {
    "preprocess": start_preprocess_run, "cnn": start_cnn_run, "features": start_features_run,
    "gbm": start_gbm_run, "experiments": start_experiments_run, "predict": start_predict_run,
}  # fmt: skip


def start_stage(
    stage: str, survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None
) -> Run:
    """Start one stage on a survey.

    Raises
    ------
    ValueError
        for an unknown stage or preset, or when the stage's inputs are missing (the message says which).
    RunConflict
        when the stage is already running on the survey.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return STAGES[stage](survey, preset_name=preset_name, force=force, user=user, parent=parent)
