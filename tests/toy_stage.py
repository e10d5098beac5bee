"""The body of a toy stage the registry test adds: it 'trains' one item and stores nothing.

Registered as ``Stage(..., body="tests.toy_stage")``; its plan refuses a survey without
targets, as every training stage's does.
"""

from __future__ import annotations

from django.db import transaction

from catalogue.selectors import require_targets
from catalogue.services import runs

#: Chunks the toy stage ran, in this process (the test reads it to see the body was called).
RAN: list[int] = []


def plan(survey, preset_name: str, *, force: bool = False) -> runs.Plan:  # noqa: ARG001 - the body interface
    require_targets(survey)
    return runs.Plan(chunks=[["toy"]], config={"toy": True})


def inputs() -> dict:
    return {"toy": 1}


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:  # noqa: ARG001
    RAN.append(claim.run.pk)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=1))
    return runs.ChunkOutcome(done=1)


HOOKS = runs.StageHooks(body=run_chunk)
