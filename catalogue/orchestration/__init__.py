"""The floor above the stages: the one start path, workflows and the reaper.

* :mod:`~catalogue.orchestration.start`: :func:`start` decides what to start (a lone stage
  or a workflow, training or applying a set); the CLI, the admin, the API and the workers
  call it and nothing else.
* :mod:`~catalogue.orchestration.stage`: starting one stage (inputs, seed, plan, ledger).
* :mod:`~catalogue.orchestration.workflow`: stages one after another, resumable.
* :mod:`~catalogue.orchestration.reaper`: runs whose workers went silent.

Below it, the stages, the services and the selectors never import it.
"""
