"""Start a preprocessing run: choose the galaxies, plan the chunks, allocate their image rows.

A galaxy is done when it has an ``ok`` preprocessing result and a written image at every
requested resolution, so a re-run adds the resolutions that are missing (a ``fast`` run
then a ``paper`` run gives 69, 128 and 197 px) and retries galaxies that failed.
"""

from __future__ import annotations

from collections.abc import Iterable

from catalogue.models import Galaxy, GalaxyStatus, Image, Preprocessed, Run, RunStage, Survey
from catalogue.services import runs
from catalogue.services.image_store import allocate_rows, get_or_create_store
from pipeline.presets import preset

STAGE = RunStage.PREPROCESS
CHUNK_TASK = "pipeline.tasks.preprocess_chunk"


def galaxies_to_preprocess(survey: Survey, resolutions: Iterable[int], force: bool = False) -> list[int]:
    """Ids of the survey's galaxies with a usable g image that lack a result at any of ``resolutions``."""
    candidates = Galaxy.objects.filter(survey=survey, images__band="g", images__status=Image.Status.OK).exclude(
        status=GalaxyStatus.REJECTED
    )
    if not force:
        done = Galaxy.objects.filter(survey=survey, preprocessed__status=Preprocessed.Status.OK)
        for resolution in resolutions:
            done = done.filter(
                pk__in=Galaxy.objects.filter(
                    survey=survey, stored_images__store__resolution=resolution, stored_images__written=True
                ).values("pk")
            )
        candidates = candidates.exclude(pk__in=done.values("pk"))
    return list(candidates.order_by("id").values_list("id", flat=True))


def start_preprocess_run(
    survey: Survey,
    resolutions: Iterable[int] | None = None,
    *,
    preset_name: str = "fast",
    force: bool = False,
    user=None,
    chunk_size: int | None = None,
    parent: Run | None = None,
    task_id: str = "",
) -> Run:
    """Create a preprocessing run and queue its chunks on the cpu queue.

    ``task_id`` is the Celery task that asked for the run, when a worker started it.

    Raises
    ------
    ValueError
        for an unknown preset, a resolution under 8 px or a chunk size under 1.
    RunConflict
        when a preprocessing run is already active on the survey.
    """
    config = preset(preset_name)
    resolutions = tuple(sorted({int(r) for r in (resolutions or config["resolutions"])}))
    if not resolutions or any(r < 8 for r in resolutions):
        raise ValueError(f"resolutions must be at least 8 px, got {resolutions}")
    chunk_size = int(chunk_size or config["chunk_size"])
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    existing = runs.active_run(survey, STAGE)
    if existing is not None:
        raise runs.RunConflict(existing)
    ids = galaxies_to_preprocess(survey, resolutions, force)
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]

    def allocate(_run: Run) -> None:
        for resolution in resolutions:
            allocate_rows(get_or_create_store(survey, resolution), ids)

    run = runs.create_run(
        STAGE,
        survey,
        chunks,
        preset=preset_name,
        resolutions=resolutions,
        user=user,
        parent=parent,
        config={"force": force, "chunk_size": chunk_size},
        prepare=allocate,
        task_id=task_id,
    )
    if not ids:
        Run.objects.filter(pk=run.pk).update(
            message="nothing to do: every galaxy is preprocessed at " + ", ".join(f"{r} px" for r in resolutions)
        )
        run.refresh_from_db()
        return run
    runs.enqueue_chunks(run, CHUNK_TASK)
    run.refresh_from_db()
    return run
