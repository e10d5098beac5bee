"""Several stages in one go: a parent run whose stages start one after another.

The parent (stage ``workflow``) holds the list of stages; each stage is an ordinary run
with the parent set. When a stage's run ends, the process that ended it (a worker, or this
process with in-process Celery) starts the next stage, so nothing polls and nothing waits:
the chain lives in the database. A stage that fails or is cancelled ends the parent with
the stage named; cancelling the parent (``runs.cancel_run``) cancels the stage in progress.
"""

from __future__ import annotations

from django.utils import timezone

from catalogue.models import Run, RunStage, Survey
from catalogue.services import runs
from catalogue.services.stages import STAGES, start_stage


def start_workflow(survey: Survey, stages: list[str], *, preset_name: str = "fast", force: bool = False, user=None) -> Run:
    """Start ``stages`` (in pipeline order) on a survey; returns the parent run.

    Raises
    ------
    ValueError
        for an unknown stage or no stage at all.
    RunConflict
        when a workflow is already active on the survey.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"stages must be some of {', '.join(STAGES)}; got {', '.join(stages) or 'none'}")
    ordered = [s for s in STAGES if s in stages]
    existing = runs.active_run(survey, RunStage.WORKFLOW)
    if existing is not None:
        raise runs.RunConflict(existing)
    parent = Run.objects.create(
        stage=RunStage.WORKFLOW, survey=survey, preset=preset_name, status=Run.Status.RUNNING, started=timezone.now(),
        heartbeat=timezone.now(), items_total=len(ordered), started_by=user,
        config={"stages": ordered, "force": force}, message=f"starting {ordered[0]}",
    )  # fmt: skip
    start_next(parent.pk)
    parent.refresh_from_db()
    return parent


def start_next(parent_id: int) -> None:
    """Start the first stage of the workflow that has not succeeded yet, or finish the workflow."""
    parent = Run.objects.select_related("survey").get(pk=parent_id)
    if parent.status not in Run.ACTIVE:
        return
    stages = parent.config["stages"]
    done = set(parent.children.filter(status=Run.Status.SUCCEEDED).values_list("stage", flat=True))
    remaining = [s for s in stages if s not in done]
    Run.objects.filter(pk=parent.pk).update(
        items_done=len(stages) - len(remaining), progress=(len(stages) - len(remaining)) / len(stages), heartbeat=timezone.now()
    )
    if not remaining:
        runs.succeed_run(parent.pk, f"all {len(stages)} stages succeeded: {', '.join(stages)}")
        return
    stage = remaining[0]
    Run.objects.filter(pk=parent.pk).update(message=f"{stage} ({len(stages) - len(remaining) + 1} of {len(stages)})")
    try:
        start_stage(stage, parent.survey, preset_name=parent.preset, force=parent.config.get("force", False),
                    user=parent.started_by, parent=parent)  # fmt: skip
    except (ValueError, runs.RunConflict) as exc:
        runs.fail_run(parent.pk, f"stage {stage} could not start: {exc}")


def on_run_finished(run_id: int) -> None:
    """Called whenever a run ends: a workflow's stage moves the workflow on, or ends it."""
    run = Run.objects.filter(pk=run_id).select_related("parent").first()
    if run is None or run.parent is None or run.parent.stage != RunStage.WORKFLOW:
        return
    if run.status == Run.Status.SUCCEEDED:
        try:
            start_next(run.parent_id)
        except Exception as exc:  # the stage that just ended is done; the workflow must not hang on
            runs.fail_run(run.parent_id, exc, where=f"starting the stage after {run.stage}")
    else:
        detail = f": {run.message}" if run.message else ""
        runs.fail_run(run.parent_id, f"stage {run.stage} (run #{run.pk}) {run.status}{detail}")

