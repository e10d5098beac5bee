"""Runs: the latest that succeeded, a workflow's stages, failures.

Every "the latest X" of the service is answered from runs that succeeded, in one order
(newest finished first): a failed or cancelled run's results are never picked. Which stage
made a product is the registry's to say (:func:`catalogue.registry.producer`).
"""

from __future__ import annotations

from django.db.models import QuerySet

from catalogue import registry
from catalogue.models import Run, RunChunk, Survey


def succeeded_runs(survey: Survey, stage: str) -> QuerySet[Run]:
    """The survey's succeeded runs of ``stage``, newest finished first."""
    return Run.objects.filter(survey=survey, stage=stage, status=Run.Status.SUCCEEDED).order_by("-finished", "-pk")


def latest_succeeded_run(survey: Survey, stage: str) -> Run | None:
    """The survey's newest succeeded run of ``stage``, if any."""
    return succeeded_runs(survey, stage).first()


def product_runs(survey: Survey, product: str) -> QuerySet[Run]:
    """The survey's succeeded runs of the stage that makes ``product`` (:data:`catalogue.registry.PRODUCTS`), newest first."""
    return succeeded_runs(survey, registry.producer(product).name)


def latest_product_run(survey: Survey, product: str) -> Run | None:
    """The survey's newest succeeded run of the stage that makes ``product``, if any."""
    return product_runs(survey, product).first()


def run_by_id(run_id: int) -> Run | None:
    """A run of a public survey with its survey, or None (a prediction job's runs are its owner's)."""
    return Run.objects.select_related("survey", "parent").exclude(survey__owner__isnull=False).filter(pk=run_id).first()


def recent_runs(survey: Survey | None = None) -> QuerySet[Run]:
    """Runs (of one survey, or of every public survey), newest first: a prediction job's runs are its owner's."""
    found = Run.objects.select_related("survey").order_by("-created", "-pk")
    return found.exclude(survey__owner__isnull=False) if survey is None else found.filter(survey=survey)


def active_runs() -> list[Run]:
    """Every queued or running run."""
    return list(recent_runs().filter(status__in=Run.ACTIVE))


def active_workflow(survey: Survey) -> Run | None:
    """The survey's active workflow, if any."""
    return Run.objects.filter(survey=survey, stage=registry.WORKFLOW, status__in=Run.ACTIVE).first()


def workflow_stages(root: Run) -> list[tuple[str, Run | None, bool]]:
    """(stage, its newest run or None, whether that run was reused) for a workflow's stages, or the run itself."""
    if root.stage != registry.WORKFLOW:
        return [(root.stage, root, False)]
    reused = root.config.get("reused", {})
    children = {run.stage: run for run in root.children.order_by("created")}  # the newest of a stage wins
    by_pk = {run.pk: run for run in Run.objects.filter(pk__in=reused.values())}
    rows = []
    for stage in root.config["stages"]:
        if stage in reused:
            rows.append((stage, by_pk.get(reused[stage]), True))
        else:
            rows.append((stage, children.get(stage), False))
    return rows


def chunk_failures(run: Run) -> list[dict]:
    """The ledger's failed and cancelled chunks with their errors, for pages and summaries."""
    return list(
        RunChunk.objects.filter(run=run, state__in=[RunChunk.State.FAILED, RunChunk.State.CANCELLED])
        .exclude(error="")
        .values("index", "state", "attempts", "worker", "error")
    )


def runs_newest_first() -> QuerySet[Run]:
    """Every run of a public survey with its survey, newest first (the API's list)."""
    return Run.objects.select_related("survey").exclude(survey__owner__isnull=False).order_by("-created")
