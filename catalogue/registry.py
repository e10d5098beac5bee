"""The pipeline's stages, each described once, as data.

Everything else about a stage derives from its entry here: the ``Run.stage`` choices, the
CLI's, admin's and API's stage choices, the Celery task that runs its chunks (named
``catalogue.tasks.<stage>``, routed to the entry's queue, with the time limits of the
entry's kind), the queue the reaper hands a lost chunk back to, the unit the console prints,
the code version that enters the stage's inputs, and its *roles*: whether it trains, whether
its products belong to the model set a training records, whether it runs when a set is
applied, and what it produces that others read. The workflow, the model sets' lineage, the
apply path and the SQL of TAP's views take their stage lists from these roles, never from
names written out. What a stage *does* lives in its body module (``catalogue/stages/<stage>.py``
unless the entry names another); see docs/architecture.md for adding one.

This module imports nothing of Django or of the rest of the service, so the data model,
the Celery app and the limits can read it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
#: The parent run of several stages (``catalogue.orchestration.workflow``): no chunks, no task.
WORKFLOW = "workflow"
WORKFLOW_LABEL = "workflow of several stages"

#: What stages produce that other code reads by kind (:func:`producer`), rather than by a stage's name.
PRODUCTS = ("images", "networks", "feature_sets", "named_models", "experiment_results", "predictions")


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes
    ----------
    name : str
        The stage's name in runs, the CLI (``--stages``), the API and the admin.
    label : str
        What the admin and pages call it.
    queue : str
        The Celery queue of its chunk task: ``cpu`` or ``gpu``.
    reads : tuple of str
        The stages whose results it reads (through them, everything before): their
        newest successful runs enter its inputs, so redoing one redoes this one.
    limit : str
        Its time-limit kind (:mod:`catalogue.limits`): ``chunk`` for per-galaxy work,
        ``train`` for model fitting. The task's soft and hard limits come from it
        (liveness is judged by heartbeats, not by these limits).
    unit : str
        What its items are, for progress lines ("galaxies", "models").
    version : int
        Bump it when the body's results change: runs of an older version are not reused.
    trains : bool
        It learns from the survey's M/L targets: refused on a survey without them, and
        never run when a model set is applied (the set brings what it would learn).
    in_model_set : bool
        Its runs are part of what a training makes: recorded in a model set's lineage.
    applies : bool
        It runs when a model set is applied to a survey.
    adapts : bool
        It adapts an applied model set to the survey's own targets, making a new set: it runs
        only when a set is applied with adapting asked for (``--adapt``), never otherwise.
    produces : tuple of str
        What it stores that other code reads by kind (:data:`PRODUCTS`).
    body : str
        The module that says what it does; empty for ``catalogue.stages.<name>``.
    """

    name: str
    label: str
    queue: str
    reads: tuple[str, ...]
    limit: str
    unit: str
    version: int = 1
    trains: bool = False
    in_model_set: bool = False
    applies: bool = False
    adapts: bool = False
    produces: tuple[str, ...] = ()
    body: str = ""

    @property
    def task_name(self) -> str:
        """The Celery task that runs one chunk of this stage."""
        return f"catalogue.tasks.{self.name}"

    @property
    def body_module(self) -> str:
        """The dotted name of its body module."""
        return self.body or f"catalogue.stages.{self.name}"

    @property
    def uses_model_set(self) -> bool:
        """Applying a set, it reads the set's products in place of a stage that trains (adapting: the set itself)."""
        return self.adapts or (self.applies and any(stage(name).trains for name in self.reads))


_STAGES: list[Stage] = [
    Stage(
        "preprocess",
        "preprocess",
        CPU_QUEUE,
        reads=(),
        limit="chunk",
        unit="galaxies",
        version=2,  # 2: an image too shallow for the target noise level gets the closest scaling value, flagged
        in_model_set=True,
        applies=True,
        produces=("images",),
    ),
    Stage(
        "cnn",
        "CNN training",
        GPU_QUEUE,
        reads=("preprocess",),
        limit="train",
        unit="networks",
        trains=True,
        in_model_set=True,
        produces=("networks",),
    ),
    Stage(
        "features",
        "CNN feature extraction",
        GPU_QUEUE,
        reads=("preprocess", "cnn"),
        limit="chunk",
        unit="galaxies",
        in_model_set=True,
        applies=True,
        produces=("feature_sets",),
    ),
    # gbm 2: intervals calibrated out-of-fold (cross-conformal), out-of-fold predictions kept;
    # experiments 2: significance also out-of-fold; predict 2: applies model sets, reports coverage
    Stage(
        "gbm",
        "GBM training",
        CPU_QUEUE,
        reads=("features",),
        limit="train",
        unit="models",
        version=2,
        trains=True,
        in_model_set=True,
        produces=("named_models",),
    ),
    Stage(
        "experiments",
        "experiments",
        CPU_QUEUE,
        reads=("gbm",),
        limit="train",
        unit="experiments",
        version=2,
        trains=True,
        produces=("experiment_results",),
    ),
    Stage(
        "adapt",
        "model-set adaptation",
        CPU_QUEUE,
        reads=("features",),
        limit="train",
        unit="models",
        adapts=True,
    ),
    Stage(
        "predict",
        "catalogue prediction",
        CPU_QUEUE,
        reads=("features", "gbm"),
        limit="chunk",
        unit="models",
        version=2,
        applies=True,
        produces=("predictions",),
    ),
]

#: Called with a stage's entry when :func:`register` adds one (the tasks module makes its task).
added_listeners: list[Callable[[Stage], None]] = []


def stages() -> tuple[Stage, ...]:
    """Every stage, in pipeline order."""
    return tuple(_STAGES)


def stage_names() -> tuple[str, ...]:
    """Stage names in pipeline order."""
    return tuple(s.name for s in _STAGES)


def stage(name: str) -> Stage:
    """The registry entry of a stage.

    Raises
    ------
    ValueError
        for a name that is no stage (the message lists the stages).
    """
    for entry in _STAGES:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(stage_names())}")


def in_pipeline_order(names: list[str]) -> list[str]:
    """``names`` sorted as the pipeline runs them.

    Raises
    ------
    ValueError
        for an unknown stage or an empty list.
    """
    known = stage_names()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"stages must be some of {', '.join(known)}; got {', '.join(names) or 'none'}")
    return [s for s in known if s in names]


def training_stages() -> tuple[str, ...]:
    """The stages that learn from targets."""
    return tuple(s.name for s in _STAGES if s.trains)


def model_set_stages() -> tuple[str, ...]:
    """The stages whose runs a model set's lineage records."""
    return tuple(s.name for s in _STAGES if s.in_model_set)


def apply_stages(adapt: bool = False) -> tuple[str, ...]:
    """The stages that run when a model set is applied to a survey (``adapt``: and adapted to its targets)."""
    return tuple(s.name for s in _STAGES if s.applies or (adapt and s.adapts))


def training_workflow_stages() -> tuple[str, ...]:
    """The stages a workflow runs when none are named and no set is applied: every stage but those that adapt."""
    return tuple(s.name for s in _STAGES if not s.adapts)


def adapt_stages() -> tuple[str, ...]:
    """The stages that adapt an applied set: never part of a workflow that does not ask for it."""
    return tuple(s.name for s in _STAGES if s.adapts)


def producer(product: str) -> Stage:
    """The stage that produces ``product`` (one of :data:`PRODUCTS`).

    Raises
    ------
    ValueError
        when no stage produces it.
    """
    for entry in _STAGES:
        if product in entry.produces:
            return entry
    raise ValueError(f"no stage produces {product!r}; products: {', '.join(PRODUCTS)}")


def run_stage_choices() -> list[tuple[str, str]]:
    """(value, label) of every kind of run: the stages, then the workflow."""
    return [(s.name, s.label) for s in _STAGES] + [(WORKFLOW, WORKFLOW_LABEL)]


def stage_choices() -> list[tuple[str, str]]:
    """(value, label) of the stages one can start, for forms."""
    return [(s.name, s.label) for s in _STAGES]


def register(entry: Stage, *, after: str) -> Stage:
    """Add a stage to the pipeline after the stage ``after``; returns the entry.

    Its task, choices, roles and place in workflows follow from the entry, as for the stages
    written above (the tasks module makes its task through :data:`added_listeners`).

    Raises
    ------
    ValueError
        for a name already taken, an unknown ``after`` or queue, a stage it reads that does
        not run before it, a product another stage already makes, or a stage in the model
        set placed after the stage that makes the named models (the set is recorded then).
    """
    names = stage_names()
    if entry.name in names or entry.name == WORKFLOW:
        raise ValueError(f"stage {entry.name!r} exists already")
    if after not in names:
        raise ValueError(f"unknown stage {after!r} to add {entry.name!r} after; stages: {', '.join(names)}")
    if entry.queue not in (CPU_QUEUE, GPU_QUEUE):
        raise ValueError(f"queue must be {CPU_QUEUE} or {GPU_QUEUE}, got {entry.queue!r}")
    position = names.index(after) + 1
    before = names[:position]
    late = [r for r in entry.reads if r not in before]
    if late:
        raise ValueError(f"stage {entry.name!r} reads {', '.join(late)}, which would not run before it")
    taken = [p for p in entry.produces if any(p in s.produces for s in _STAGES)]
    if taken or any(p not in PRODUCTS for p in entry.produces):
        raise ValueError(f"stage {entry.name!r} produces {', '.join(entry.produces)}; a product is made by one stage only")
    if entry.in_model_set and producer("named_models").name in before:
        raise ValueError(f"stage {entry.name!r} belongs to the model set: it must run before {producer('named_models').name}")
    _STAGES.insert(position, entry)
    for listener in list(added_listeners):
        listener(entry)
    return entry


def unregister(name: str) -> None:
    """Remove a stage added by :func:`register` (its task stays known to Celery, unused)."""
    _STAGES[:] = [s for s in _STAGES if s.name != name]
