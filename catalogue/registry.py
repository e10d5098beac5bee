"""The pipeline's stages, each described once, as data.

Everything else about a stage derives from its entry here: the ``Run.stage`` choices, the
CLI's, admin's and API's stage choices, the Celery task that runs its chunks (named
``catalogue.tasks.<stage>``, routed to the entry's queue, with the time limits of the
entry's kind), the queue the reaper hands a lost chunk back to, the unit the console prints and the code
version that enters the stage's inputs. What a stage *does* (how it plans its chunks,
its body, what else enters its inputs) lives in its body module,
``catalogue/stages/<stage>.py``; see docs/architecture.md for adding one.

This module imports nothing of Django or of the rest of the service, so the data model,
the Celery app and the limits can read it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
#: The parent run of several stages (``catalogue.services.workflow``): no chunks, no task.
WORKFLOW = "workflow"
WORKFLOW_LABEL = "workflow of several stages"


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
    """

    name: str
    label: str
    queue: str
    reads: tuple[str, ...]
    limit: str
    unit: str
    version: int = 1

    @property
    def task_name(self) -> str:
        """The Celery task that runs one chunk of this stage."""
        return f"catalogue.tasks.{self.name}"


STAGES: tuple[Stage, ...] = (
    Stage("preprocess", "preprocess", CPU_QUEUE, reads=(), limit="chunk", unit="galaxies"),
    Stage("cnn", "CNN training", GPU_QUEUE, reads=("preprocess",), limit="train", unit="networks"),
    Stage("features", "CNN feature extraction", GPU_QUEUE, reads=("preprocess", "cnn"), limit="chunk", unit="galaxies"),
    # gbm 2: intervals calibrated out-of-fold (cross-conformal), out-of-fold predictions kept;
    # experiments 2: significance also out-of-fold; predict 2: applies model sets, reports coverage
    Stage("gbm", "GBM training", CPU_QUEUE, reads=("features",), limit="train", unit="models", version=2),
    Stage("experiments", "experiments", CPU_QUEUE, reads=("gbm",), limit="train", unit="experiments", version=2),
    Stage("predict", "catalogue prediction", CPU_QUEUE, reads=("features", "gbm"), limit="chunk", unit="models", version=2),
)
#: Stage names in pipeline order.
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The registry entry of a stage.

    Raises
    ------
    ValueError
        for a name that is no stage (the message lists the stages).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}") from None


def in_pipeline_order(names: list[str]) -> list[str]:
    """``names`` sorted as the pipeline runs them.

    Raises
    ------
    ValueError
        for an unknown stage or an empty list.
    """
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown or not names:
        raise ValueError(f"stages must be some of {', '.join(STAGE_NAMES)}; got {', '.join(names) or 'none'}")
    return [s for s in STAGE_NAMES if s in names]


def run_stage_choices() -> list[tuple[str, str]]:
    """(value, label) of every kind of run: the stages, then the workflow."""
    return [(s.name, s.label) for s in STAGES] + [(WORKFLOW, WORKFLOW_LABEL)]
