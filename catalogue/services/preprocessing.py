"""Run the image preprocessing over a survey and store the results.

``start_preprocess_run`` creates a :class:`TrainingRun` and queues one ``preprocess_chunk``
task per chunk of galaxies on the cpu queue; each chunk writes its ``Preprocessed`` rows
and one float16 array shard per network resolution, then updates the run's progress. The
run's counts are recomputed from the rows it produced, so a chunk redelivered after a
worker crash cannot count twice. Per-galaxy failures (a blank image, noise that cannot be
estimated) are stored as failed rows with the reason, and the batch goes on.
"""

from __future__ import annotations

import io
import logging
import traceback
import uuid
from collections.abc import Iterable

import numpy as np
from astropy.io import fits
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from catalogue.models import Galaxy, GalaxyStatus, Image, Preprocessed, Survey, TrainingRun
from pipeline.photometry import cosmology, pixel_size_kpc
from pipeline.preprocess import ImageMeta, preprocess_cutout
from pipeline.presets import preset
from pipeline.stars import prior_pixels

log = logging.getLogger(__name__)

STAGE = "preprocess"


def galaxies_to_preprocess(survey: Survey, force: bool = False):
    """Ids of the survey's galaxies with a usable g image, minus those already done (unless forced)."""
    queryset = Galaxy.objects.filter(
        survey=survey, images__band="g", images__status=Image.Status.OK
    ).exclude(status=GalaxyStatus.REJECTED)
    if not force:
        queryset = queryset.exclude(preprocessed__status=Preprocessed.Status.OK)
    return list(queryset.order_by("id").values_list("id", flat=True))


def start_preprocess_run(
    survey: Survey,
    resolutions: Iterable[int] | None = None,
    *,
    preset_name: str = "fast",
    force: bool = False,
    user=None,
    chunk_size: int | None = None,
) -> TrainingRun:
    """Create a preprocessing run and queue its chunks (run in-process when Celery is eager)."""
    from pipeline.tasks import preprocess_chunk

    config = preset(preset_name)
    resolutions = tuple(int(r) for r in (resolutions or config["resolutions"]))
    if any(r < 8 for r in resolutions):
        raise ValueError(f"resolutions must be at least 8 px, got {resolutions}")
    chunk_size = int(chunk_size or config["chunk_size"])
    ids = galaxies_to_preprocess(survey, force)
    run = TrainingRun.objects.create(
        stage=STAGE, survey=survey, started_by=user, items_total=len(ids),
        config={"resolutions": list(resolutions), "preset": preset_name, "force": force, "chunk_size": chunk_size},
        message=f"{len(ids)} galaxies queued in {max(1, -(-len(ids) // chunk_size))} chunks",
    )  # fmt: skip
    if not ids:
        _finish(run, TrainingRun.Status.SUCCEEDED, "nothing to do: every galaxy is preprocessed")
        return run
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING, started=timezone.now())
    for start in range(0, len(ids), chunk_size):
        preprocess_chunk.delay(run.pk, ids[start : start + chunk_size])
    run.refresh_from_db()
    return run


def _stars_prior(galaxy: Galaxy, header) -> np.ndarray | None:
    """Catalogue stars of this cutout in pixels; None when the survey had no star catalogue."""
    if not galaxy.survey.has_star_catalogue:
        return None
    return prior_pixels(header, galaxy.extra.get("stars", []))


def _pixel_sizes_kpc(galaxies: list[Galaxy], g_images: dict, cosmo) -> dict[int, float]:
    """Physical pixel size (kpc) per galaxy id, in one vectorised cosmology call for the chunk."""
    usable = [g for g in galaxies if g_images[g.pk] is not None]
    if not usable:
        return {}
    scales = np.array([g_images[g.pk].pixscale_arcsec for g in usable])
    sizes = np.atleast_1d(pixel_size_kpc(scales, np.array([g.z for g in usable]), cosmo))
    return {g.pk: float(size) for g, size in zip(usable, sizes, strict=True)}


def run_chunk(run_id: int, galaxy_ids: list[int]) -> dict:
    """Preprocess one chunk of galaxies for a run; returns counts for the caller's log."""
    run = TrainingRun.objects.select_related("survey").get(pk=run_id)
    if run.status in (TrainingRun.Status.CANCELLED, TrainingRun.Status.FAILED):
        return {"skipped": len(galaxy_ids)}
    resolutions = tuple(run.config["resolutions"])
    galaxies = list(
        Galaxy.objects.filter(pk__in=galaxy_ids).select_related("survey").prefetch_related("images").order_by("id")
    )
    g_images = {
        g.pk: next((i for i in g.images.all() if i.band == "g" and i.status == Image.Status.OK), None) for g in galaxies
    }
    pixel_kpc = _pixel_sizes_kpc(galaxies, g_images, cosmology(run.survey.h0, run.survey.om0))
    stacks: dict[int, list[np.ndarray]] = {r: [] for r in resolutions}
    rows: list[Preprocessed] = []
    for galaxy in galaxies:
        row = Preprocessed(galaxy=galaxy, run=run)
        try:
            image = g_images[galaxy.pk]
            if image is None:
                raise ValueError("no usable g-band image")
            with image.file.open("rb") as fh, fits.open(io.BytesIO(fh.read())) as hdul:
                header, data = hdul[0].header, hdul[0].data.astype(np.float64)
            meta = ImageMeta(
                redshift=galaxy.z, lum_dist_mpc=galaxy.lum_dist_mpc,
                pixel_kpc=pixel_kpc[galaxy.pk],
            )  # fmt: skip
            result = preprocess_cutout(
                data, image.psf_fwhm_arcsec / image.pixscale_arcsec, meta, resolutions,
                prior_xy=_stars_prior(galaxy, header), seed=galaxy.objid % (2**32),
            )  # fmt: skip
        except Exception as exc:  # one bad galaxy never stops the batch
            row.status, row.error = Preprocessed.Status.FAILED, f"{type(exc).__name__}: {exc}"[:300]
            log.info("preprocess failed for %s: %s", galaxy.objid, row.error)
            rows.append(row)
            continue
        row.scaling_value, row.noise_level = result.scaling_value, result.noise_level
        row.n_stars_removed, row.features = result.n_stars_removed, result.features
        row.arrays = {str(r): [None, len(stacks[r])] for r in resolutions}
        for r in resolutions:
            stacks[r].append(result.resized[r].astype(np.float16))
        rows.append(row)

    shard_names = {r: _write_shard(run, r, np.stack(stacks[r])) for r in resolutions if stacks[r]}
    for row in rows:
        for r in resolutions:
            if str(r) in row.arrays:
                row.arrays[str(r)][0] = shard_names[r]
    with transaction.atomic():
        Preprocessed.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["galaxy"],
            update_fields=["run", "status", "error", "scaling_value", "noise_level", "n_stars_removed", "features", "arrays"],
        )  # fmt: skip
    update_progress(run_id)
    failed = sum(r.status == Preprocessed.Status.FAILED for r in rows)
    return {"done": len(rows) - failed, "failed": failed}


def _write_shard(run: TrainingRun, resolution: int, stack: np.ndarray) -> str:
    """Store a (N, res, res) float16 stack; returns its storage name."""
    buffer = io.BytesIO()
    np.save(buffer, stack, allow_pickle=False)
    name = f"preprocessed/{run.survey.name}/{resolution}px/run{run.pk}-{uuid.uuid4().hex[:12]}.npy"
    return default_storage.save(name, ContentFile(buffer.getvalue()))


def update_progress(run_id: int) -> TrainingRun:
    """Recount the run's results from its rows; finish it when every galaxy is accounted for."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        counts = Preprocessed.objects.filter(run=run).aggregate(
            ok=Count("id", filter=Q(status=Preprocessed.Status.OK)),
            failed=Count("id", filter=Q(status=Preprocessed.Status.FAILED)),
        )
        run.items_done, run.items_failed = counts["ok"], counts["failed"]
        handled = run.items_done + run.items_failed
        run.progress = min(1.0, handled / run.items_total) if run.items_total else 1.0
        run.message = f"{handled} of {run.items_total} galaxies preprocessed, {run.items_failed} failed"
        finished = handled >= run.items_total and run.status == TrainingRun.Status.RUNNING
        if finished:
            run.status, run.finished = TrainingRun.Status.SUCCEEDED, timezone.now()
            run.result = {"done": run.items_done, "failed": run.items_failed, "failures": failure_list(run)}
        run.save()
    if finished:
        run.result["shards_pruned"] = prune_shards(run.survey)
        TrainingRun.objects.filter(pk=run.pk).update(result=run.result)
    return run


def prune_shards(survey: Survey) -> int:
    """Delete array shards no galaxy points to any more (left by forced re-runs).

    Only shards of runs that are over are touched: a running run writes its shards before
    its rows point to them.
    """
    referenced = {
        shard for arrays in Preprocessed.objects.filter(galaxy__survey=survey).values_list("arrays", flat=True)
        for shard, _ in arrays.values()
    }  # fmt: skip
    active = {f"run{pk}-" for pk in TrainingRun.objects.filter(
        survey=survey, status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
    ).values_list("pk", flat=True)}  # fmt: skip
    root = f"preprocessed/{survey.name}"
    if not default_storage.exists(root):
        return 0
    pruned = 0
    for folder in default_storage.listdir(root)[0]:
        for name in default_storage.listdir(f"{root}/{folder}")[1]:
            path = f"{root}/{folder}/{name}"
            if path not in referenced and not any(name.startswith(prefix) for prefix in active):
                default_storage.delete(path)
                pruned += 1
    return pruned


def failure_list(run: TrainingRun) -> list[dict]:
    return [
        {"objid": objid, "reason": error}
        for objid, error in Preprocessed.objects.filter(run=run, status=Preprocessed.Status.FAILED).values_list(
            "galaxy__objid", "error"
        )
    ]


def fail_run(run_id: int, exc: BaseException) -> None:
    """Mark a run failed with the exception (a chunk crashed as a whole)."""
    run = TrainingRun.objects.get(pk=run_id)
    run.log += "".join(traceback.format_exception(exc))[-5000:]
    _finish(run, TrainingRun.Status.FAILED, f"{type(exc).__name__}: {exc}"[:300])


def _finish(run: TrainingRun, status: str, message: str) -> None:
    run.status, run.message, run.finished = status, message, timezone.now()
    run.started = run.started or run.finished
    if status == TrainingRun.Status.SUCCEEDED:
        run.progress = 1.0
    run.save()


def load_log_images(galaxies: Iterable[Galaxy], resolution: int) -> np.ndarray:
    """(N, res, res) float32 log-scaled images of the given preprocessed galaxies, shard by shard.

    Each shard is read once however many of its rows are asked for, which is how the CNN
    training streams batches.
    """
    wanted = [(g.preprocessed.arrays[str(resolution)], i) for i, g in enumerate(galaxies)]
    out = np.empty((len(wanted), resolution, resolution), dtype=np.float32)
    by_shard: dict[str, list[tuple[int, int]]] = {}
    for (shard, row), i in wanted:
        by_shard.setdefault(shard, []).append((row, i))
    for shard, pairs in by_shard.items():
        with default_storage.open(shard, "rb") as fh:
            stack = np.load(io.BytesIO(fh.read()), allow_pickle=False)
        for row, i in pairs:
            out[i] = stack[row]
    return out
