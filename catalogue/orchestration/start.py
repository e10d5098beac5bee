"""The one start path: what to start, decided once for the CLI, the admin, the API and the workers.

Given a survey, the stages asked for (or none), a model set to apply (or none), a preset,
``force`` and who asked, :func:`start` decides: a model set given, a workflow of the apply
stages (or of those asked for); one stage, that stage alone; otherwise a workflow of the
stages asked for (every stage when none is named). Callers translate their inputs into these
arguments and its errors into their own (a form error, a 400 or 409, a command error).
"""

from __future__ import annotations

from collections.abc import Sequence

from catalogue import registry
from catalogue.models import ModelSet, Run, Survey
from catalogue.orchestration.stage import start_stage
from catalogue.orchestration.workflow import start_workflow


def default_stages(model_set: ModelSet | None = None, adapt: bool = False) -> tuple[str, ...]:
    """The stages started when none are named: those a set's application (and adaptation) runs, or
    every stage of a training."""
    return registry.apply_stages(adapt) if model_set is not None else registry.training_workflow_stages()


def start(
    survey: Survey,
    stages: Sequence[str] = (),
    *,
    model_set: ModelSet | None = None,
    adapt: bool = False,
    targets: int | None = None,
    preset_name: str = "fast",
    force: bool = False,
    user=None,
    task_id: str = "",
    **options,
) -> Run:
    """Start work on a survey; returns the run started (a workflow, or a lone stage).

    With ``adapt`` the model set is also adapted to the survey's own targets (``targets`` of
    them, default all of its train and validation splits' ones) and the new set predicts.
    ``options`` (preprocess: ``resolutions``, ``chunk_size``) go to a stage started alone.

    Raises
    ------
    ValueError
        for an unknown stage or preset, a training stage with a model set or on a survey
        without targets, adapting without a set or with too few targets, options given to
        several stages, or a stage whose inputs are missing.
    RunConflict
        when a workflow or a stage is already active on the survey.
    """
    if (adapt or targets is not None) and model_set is None:
        raise ValueError("adapting needs the model set to adapt: name it (--models FROM --adapt)")
    if targets is not None and not adapt:
        raise ValueError("a number of targets applies to adapting a set (--adapt)")
    chosen = registry.in_pipeline_order(list(stages or default_stages(model_set, adapt)))
    if model_set is None and len(chosen) == 1:
        return start_stage(chosen[0], survey, preset_name=preset_name, force=force, user=user, task_id=task_id, **options)
    given = {name: value for name, value in options.items() if value is not None}
    if given:
        raise ValueError(f"{', '.join(sorted(given))} apply to one stage started alone, not to a workflow of {', '.join(chosen)}")
    return start_workflow(
        survey,
        chosen,
        preset_name=preset_name,
        force=force,
        user=user,
        model_set=model_set,
        adapt={"targets": targets} if adapt else None,
    )
