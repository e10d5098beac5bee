"""The stages' body modules, one per registry entry: ``catalogue/stages/<stage>.py`` unless the
entry names another (:attr:`catalogue.registry.Stage.body`).

Each module says what its stage does; :mod:`catalogue.registry` says how it is run. A
module provides:

* ``plan(survey, preset_name, *, force=False, **options) -> runs.Plan``: checks the
  stage's inputs exist (``ValueError`` naming what is missing) and splits the work into
  chunks whose items name what they hold (galaxy ids, or names of networks, models,
  experiments);
* ``inputs() -> dict``: what in the code, beyond the preset and the runs it reads,
  decides its results (the named models' specifications, the experiments' sources); it
  enters the stage's inputs, so a change redoes the stage;
* ``HOOKS``: the :class:`~catalogue.services.runs.StageHooks` whose ``body`` does one chunk.

Every start goes through :func:`catalogue.orchestration.start.start`, every chunk
through the task ``catalogue.tasks.<stage>``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from catalogue import registry

#: What a body module must provide.
BODY_ATTRIBUTES = ("plan", "inputs", "HOOKS")


def body(stage: str) -> ModuleType:
    """The body module of a stage.

    Raises
    ------
    ValueError
        for an unknown stage.
    ImportError
        when its module lacks ``plan``, ``inputs`` or ``HOOKS``.
    """
    module = importlib.import_module(registry.stage(stage).body_module)
    lacking = [name for name in BODY_ATTRIBUTES if not hasattr(module, name)]
    if lacking:
        raise ImportError(f"the body module {module.__name__} of stage {stage!r} lacks {', '.join(lacking)}")
    return module


def check_bodies() -> None:
    """Import every stage's body module, so a registry entry without one fails at start-up."""
    for name in registry.stage_names():
        body(name)
