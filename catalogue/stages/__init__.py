"""The stages' body modules, one per registry entry, named by one rule: ``catalogue/stages/<stage>.py``.

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

Every start goes through :func:`catalogue.services.start.start_stage`, every chunk
through the task ``catalogue.tasks.<stage>``.
"""

from __future__ import annotations

from types import ModuleType

from catalogue import registry
from catalogue.stages import cnn, experiments, features, gbm, predict, preprocess

#: stage name -> its body module.
BODIES: dict[str, ModuleType] = {
    module.__name__.rpartition(".")[2]: module for module in (preprocess, cnn, features, gbm, experiments, predict)
}
if set(BODIES) != set(registry.STAGE_NAMES):  # a registry entry without a body module, or the reverse
    raise ImportError(f"stage bodies {sorted(BODIES)} do not match the registry's stages {sorted(registry.STAGE_NAMES)}")


def body(stage: str) -> ModuleType:
    """The body module of a stage (``ValueError`` for an unknown stage)."""
    return BODIES[registry.stage(stage).name]
