"""Several stages in one go: a parent run whose stages start one after another.

The parent (stage ``workflow``) holds the list of stages; each stage is an ordinary run
with the parent set. When a stage's run ends, the process that ended it (a worker, or this
process with in-process Celery) starts the next stage, so nothing polls and nothing waits:
the chain lives in the database. A stage that fails or is cancelled ends the parent with
the stage named and its traceback; cancelling the parent (``runs.cancel_run``) cancels
the stage in progress.

The run engine knows nothing of workflows: ``CatalogueConfig.ready`` registers
:func:`on_run_finished` among :data:`catalogue.services.runs.finish_listeners`. Workflows are
started by :func:`catalogue.orchestration.start.start`, the one start path.

A workflow is resumable: a stage that already succeeded with the same inputs (see
:func:`catalogue.orchestration.stage.stage_inputs`) is reused, not run again, unless
``force`` is set. Running the same workflow again after a failure or a cancellation
therefore continues from the first stage that did not succeed.

Boundaries survive outages: should the database or the broker be away when a stage ends,
the stage's end is recorded and the next start is left to the reaper, which watches
workflows (:func:`resume`): one with no active stage for a while moves on, or ends as
its last stage did. A refused message is sent again from the ledger (``services/runs.py``).

A workflow with a model set (``model_set``) applies a set trained on another survey: its
stages are those the registry says run when a set is applied, with the set's preset, and a
stage that reads a training stage's products takes the set's instead
(:attr:`catalogue.registry.Stage.uses_model_set`). It trains nothing. With ``adapt`` it also
runs the stage that adapts the set to the survey's targets, and the stages after it take
the adapted set (the one that stage's run recorded) in place of the set applied.
"""

from __future__ import annotations

import logging

from django.db.models.functions import Now

from catalogue import registry
from catalogue.models import ModelSet, Run, Survey
from catalogue.orchestration.stage import reusable_run, start_stage
from catalogue.selectors import adapted_set_of_workflow, require_adaptation_targets, require_targets
from catalogue.services import faults, runs

log = logging.getLogger(__name__)


def start_workflow(
    survey: Survey,
    stages: list[str],
    *,
    preset_name: str = "fast",
    force: bool = False,
    user=None,
    model_set: ModelSet | None = None,
    adapt: dict | None = None,
) -> Run:
    """Start ``stages`` (in pipeline order) on a survey; returns the parent run.

    With ``model_set`` the workflow applies that set (its preset replaces ``preset_name``);
    with ``adapt`` ({"targets": n or None}) it adapts the set to the survey's targets too.

    Raises
    ------
    ValueError
        for an unknown stage or no stage at all, a training stage on a survey without
        targets, a training stage with a model set, an adapting stage without a set to adapt
        or on a survey with too few targets, or when the first stage cannot start
        (its inputs are missing: the message says which).
    RunConflict
        when a workflow or a stage is already active on the survey: one survey's stages
        read each other's results, so they run one workflow at a time.
    """
    ordered = registry.in_pipeline_order(list(stages))
    if model_set is not None:
        training = [s for s in ordered if not (registry.stage(s).applies or registry.stage(s).adapts)]
        if training:
            raise ValueError(
                f"applying model set {model_set.name} trains nothing: leave out {', '.join(training)} "
                f"(its stages are {', '.join(registry.apply_stages())})"
            )
        preset_name = model_set.preset or preset_name
        adapting = [s for s in ordered if registry.stage(s).adapts]
        if adapting and adapt is None:
            raise ValueError(f"{', '.join(adapting)} adapts the set to the survey's targets: ask for it (--adapt)")
        if adapt is not None:
            if not adapting:
                ordered = registry.in_pipeline_order([*ordered, *registry.adapt_stages()])
            require_adaptation_targets(survey, adapt.get("targets"))
    elif any(registry.stage(s).adapts for s in ordered):
        raise ValueError("adapting needs the model set to adapt: name it (--models FROM --adapt)")
    elif any(registry.stage(s).trains for s in ordered):
        require_targets(survey)
    existing = runs.active_root(survey)
    if existing is not None:
        raise runs.RunConflict(existing)
    # two starts at once: the database lets one workflow per survey be active (RunConflict for the other)
    parent = runs.create_run(
        registry.WORKFLOW,
        survey,
        [],
        preset=preset_name,
        user=user,
        config={
            "stages": ordered,
            "force": force,
            "reused": {},
            **({"model_set": model_set.pk} if model_set else {}),
            **({"adapt": adapt} if adapt is not None else {}),
        },
        status=Run.Status.RUNNING,
    )
    Run.objects.filter(pk=parent.pk).update(items_total=len(ordered), message=f"starting {ordered[0]}")
    start_next(parent.pk)
    parent.refresh_from_db()
    if parent.status == Run.Status.FAILED and not parent.children.exists() and not parent.config.get("reused"):
        parent.delete()  # nothing began: an error to the caller, not a failed workflow in the list
        raise ValueError(parent.message.removeprefix(f"stage {ordered[0]} could not start: "))
    return parent


def start_next(parent_id: int) -> None:
    """Start the first stage of the workflow that has not succeeded yet, or finish the workflow.

    Stages whose last success had the same inputs are skipped (recorded under
    ``config["reused"]`` with the run reused), unless the workflow forces a redo.
    """
    parent = Run.objects.select_related("survey").get(pk=parent_id)
    while parent.status in Run.ACTIVE:
        stages, reused = parent.config["stages"], dict(parent.config.get("reused", {}))
        done = set(parent.children.filter(status=Run.Status.SUCCEEDED).values_list("stage", flat=True)) | set(reused)
        remaining = [s for s in stages if s not in done]
        done_count = len(stages) - len(remaining)
        Run.objects.filter(pk=parent.pk).update(items_done=done_count, progress=done_count / len(stages), heartbeat=Now())
        if not remaining:
            fresh = [s for s in stages if s not in reused]
            n = len(stages)
            message = f"all {n} stages succeeded: {', '.join(fresh)}" if fresh else f"all {n} stages up to date"
            if reused:
                message += f" ({'reused' if fresh else 'reusing'}: {', '.join(reused)})"
            runs.succeed_run(parent.pk, message)
            return
        stage, force = remaining[0], parent.config.get("force", False)
        options = stage_options(parent, stage)
        previous = None if force else reusable_run(stage, parent.survey, parent.preset, **options)
        if previous is not None:
            parent.config = {**parent.config, "reused": {**reused, stage: previous.pk}}
            Run.objects.filter(pk=parent.pk).update(config=parent.config)
            continue
        Run.objects.filter(pk=parent.pk).update(message=f"{stage} ({len(stages) - len(remaining) + 1} of {len(stages)})")
        try:
            start_stage(
                stage, parent.survey, preset_name=parent.preset, force=force, user=parent.started_by, parent=parent, **options
            )
        except runs.RunConflict as exc:
            if exc.active.parent_id == parent.pk:
                return  # started meanwhile by the reaper's watch, or by the listener it stood in for
            runs.fail_run(parent.pk, f"stage {stage} could not start: {exc}")
        except ValueError as exc:
            runs.fail_run(parent.pk, f"stage {stage} could not start: {exc}")
        return


def stage_options(parent: Run, stage: str) -> dict:
    """What a workflow's stage is started with: the set applied where it reads one, the number of
    targets where it adapts, and after an adaptation the adapted set in place of the one applied."""
    applying = parent.config.get("model_set")
    entry = registry.stage(stage)
    if not applying or not (entry.uses_model_set or entry.applies):
        return {}
    options: dict = {}
    if entry.adapts:
        options = {"model_set": applying, "targets": (parent.config.get("adapt") or {}).get("targets")}
    elif "adapt" in parent.config and stage_after_adaptation(parent, stage):
        options = {"model_set": adapted_set_of(parent)}
    elif entry.uses_model_set:
        options = {"model_set": applying}
    return options


def stage_after_adaptation(parent: Run, stage: str) -> bool:
    """Whether ``stage`` comes after the workflow's adapting stage (it reads the adapted set)."""
    stages = parent.config["stages"]
    adapting = [s for s in stages if registry.stage(s).adapts]
    return bool(adapting) and stages.index(stage) > stages.index(adapting[0])


def adapted_set_of(parent: Run) -> int:
    """The id of the set the workflow's adapting stage recorded.

    Raises
    ------
    ValueError
        when that stage recorded none (it cannot have succeeded).
    """
    found = adapted_set_of_workflow(parent)
    if found is None:
        raise ValueError(f"the adapting stage of workflow #{parent.pk} recorded no adapted model set")
    return found.pk


def on_run_finished(run_id: int) -> None:
    """Called whenever a run ends: a workflow's stage moves the workflow on, or ends it; a workflow
    that ended otherwise than in success takes its stage in progress with it.

    Should the database or the broker be away meanwhile, nothing is lost: the stage's end is
    recorded, and the reaper's watch (:func:`resume`) moves the workflow on once they are back.
    """
    try:
        run = Run.objects.filter(pk=run_id).select_related("parent").first()
        if run is not None and run.stage == registry.WORKFLOW and run.status != Run.Status.SUCCEEDED:
            _end_stages_of(run)
        if run is None or run.parent is None or run.parent.stage != registry.WORKFLOW:
            return
        faults.at_boundary(run.stage)
        _follow(run)
    except runs.TRANSIENT_ERRORS as exc:
        log.warning("run %s ended while a service was away (%s): the reaper moves its workflow on", run_id, exc)


def _follow(run: Run) -> None:
    """Move the workflow of a stage's run that ended on, or end it as the stage ended."""
    if run.status == Run.Status.SUCCEEDED:
        try:
            start_next(run.parent_id)
        except runs.TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # the stage that just ended is done; the workflow must not hang on
            runs.fail_run(run.parent_id, exc, where=f"starting the stage after {run.stage}")
    else:
        detail = f": {run.message}" if run.message else ""
        runs.fail_run(run.parent_id, f"stage {run.stage} (run #{run.pk}) {run.status}{detail}", details=run.error)


def _end_stages_of(workflow: Run) -> None:
    """Cancel the stages still active under a workflow that ended (a stage must not outlive it)."""
    for child in Run.objects.filter(parent=workflow, status__in=Run.ACTIVE):
        runs.cancel_run(child)


def resume(workflow: Run) -> None:
    """Do for an active workflow with no active stage what its last stage's end should have done:
    start the next stage (or succeed), or fail as that stage ended. Called by the reaper's watch."""
    last = workflow.children.order_by("-created").first()
    if last is None:
        start_next(workflow.pk)
    else:
        _follow(last)


def orphaned_stages() -> list[Run]:
    """Active stages whose workflow has ended: what :func:`_end_stages_of` would have cancelled."""
    return list(Run.objects.filter(status__in=Run.ACTIVE, parent__stage=registry.WORKFLOW).exclude(parent__status__in=Run.ACTIVE))
