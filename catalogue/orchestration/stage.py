"""Starting one stage, and what its result depends on.

A stage's *inputs* are the preset's settings, the options it was started with, its code
(the registry's version and what its body module's ``inputs()`` says), the survey's galaxies
and the runs of the stages before it that it reads. Every started run records them in
``config["inputs"]``, so a workflow run again after a failure or a cancellation reuses a
stage that already succeeded with the same inputs and redoes one whose inputs changed.

Every run also records its ``seed``, derived from what the run is (its stage, settings,
code and options, the survey's galaxies by value, the seeds of the runs it reads), never
from a database id: the same inputs give the same numbers, whichever runs came before.
Only :mod:`catalogue.orchestration.start` and workflows call :func:`start_stage`.
"""

from __future__ import annotations

import hashlib
import json

from django.db.models import Count, Max

from catalogue import registry, stages
from catalogue.models import Galaxy, Run, Survey
from catalogue.selectors import galaxy_digest, latest_succeeded_run, succeeded_runs
from catalogue.services import runs
from pipeline.presets import preset

#: Successful runs of a stage looked at for one with the same inputs (newest first).
REUSE_CANDIDATES = 20


def start_stage(
    stage: str,
    survey: Survey,
    *,
    preset_name: str = "fast",
    force: bool = False,
    user=None,
    parent: Run | None = None,
    task_id: str = "",
    **options,
) -> Run:
    """Start one stage on a survey: check, record its inputs and seed, plan, create the run, enqueue its chunks.

    ``options`` go to the stage's ``plan`` (preprocess: ``resolutions``, ``chunk_size``)
    and enter its inputs. ``task_id`` is the Celery task that asked for the run, when a
    worker started it.

    Raises
    ------
    ValueError
        for an unknown stage or preset, or when the stage's inputs are missing (the message says which).
    RunConflict
        when the stage, or (started alone) any workflow or stage, is already active on the survey.
    """
    entry = registry.stage(stage)
    options = {name: value for name, value in options.items() if value is not None}  # None: the preset's default
    # before planning (a plan may read a whole survey); the database refuses a start that races this one
    existing = runs.active_run(survey, entry.name) or (runs.active_root(survey) if parent is None else None)
    if existing is not None:
        raise runs.RunConflict(existing)
    inputs = stage_inputs(entry.name, survey, preset_name, **options)
    plan = stages.body(entry.name).plan(survey, preset_name, force=force, **options)
    run = runs.create_run(
        entry.name,
        survey,
        plan.chunks,
        preset=preset_name,
        resolutions=plan.resolutions,
        config={**plan.config, "force": force, "inputs": inputs, "seed": run_seed(entry.name, survey, inputs)},
        user=user,
        parent=parent,
        prepare=plan.prepare,
        task_id=task_id,
    )
    if not plan.chunks and plan.idle_message:
        Run.objects.filter(pk=run.pk).update(message=plan.idle_message)
    runs.enqueue_chunks(run, entry.task_name)
    run.refresh_from_db()
    return run


def stage_inputs(stage: str, survey: Survey, preset_name: str, **options) -> dict:
    """What a run of ``stage`` started now would depend on (JSON, compared as a whole).

    ``upstream`` names the newest successful run on the survey of each stage it reads
    (:attr:`catalogue.registry.Stage.reads`). ``galaxies`` is their count and highest id,
    so an ingest of more galaxies changes it. ``code`` hashes the registry's version and
    the body module's ``inputs()``.

    Raises
    ------
    ValueError
        for an unknown stage or preset.
    """
    entry = registry.stage(stage)
    code = {"version": entry.version, **stages.body(stage).inputs()}
    galaxies = Galaxy.objects.filter(survey=survey).aggregate(n=Count("id"), last=Max("id"))
    upstream = {}
    for earlier in entry.reads:
        latest = latest_succeeded_run(survey, earlier)
        upstream[earlier] = latest.pk if latest is not None else None
    inputs = {
        "preset": preset_name,
        "settings": _digest(dict(preset(preset_name))),
        "code": _digest(code),
        "galaxies": [galaxies["n"], galaxies["last"]],
        "upstream": upstream,
    }
    if options:
        inputs["options"] = json.loads(json.dumps(options, sort_keys=True, default=str))
    return inputs


def run_seed(stage: str, survey: Survey, inputs: dict) -> int:
    """The seed of a run with these inputs: a 31-bit number from what the run is, never from a row id.

    The upstream runs enter by their own seeds, and the galaxies by value, so two runs on the
    same data with the same settings and code get the same seed on any database.
    """
    upstream = {name: _seed_of(pk) for name, pk in sorted(inputs["upstream"].items())}
    identity = {
        "stage": stage,
        "settings": inputs["settings"],
        "code": inputs["code"],
        "options": inputs.get("options", {}),
        "galaxies": galaxy_digest(survey),
        "upstream": upstream,
    }
    return int(_digest(identity), 16) % (2**31 - 1)


def _seed_of(run_id: int | None) -> int | None:
    if run_id is None:
        return None
    config = Run.objects.filter(pk=run_id).values_list("config", flat=True).first() or {}
    return config.get("seed")


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reusable_run(stage: str, survey: Survey, preset_name: str, **options) -> Run | None:
    """The newest successful run of ``stage`` whose inputs (with ``options``) equal what a new run would have, if any."""
    options = {name: value for name, value in options.items() if value is not None}
    inputs = stage_inputs(stage, survey, preset_name, **options)
    candidates = succeeded_runs(survey, stage)[:REUSE_CANDIDATES]
    return next((run for run in candidates if run.config.get("inputs") == inputs), None)
