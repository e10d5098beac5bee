"""The preprocess stage: star removal, scaling and resizing of every galaxy's g image.

Where the preset's ``image_bands`` holds ``i``, a galaxy with an i cutout also gets its i
image (star-removed with the g band's stars, scaled and resized the same way) and a g - i
colour map at each resolution, in the i and g - i image stores (:mod:`pipeline.images.colour`);
a galaxy without one, or whose i image cannot be used, keeps its g image and says why in
``Preprocessed.i_band``.

:func:`plan` chooses the galaxies and allocates their image rows. A galaxy is done when
it has an ``ok`` preprocessing result and a written image at every requested resolution,
so a re-run adds the resolutions that are missing (a ``fast`` run then a ``paper`` run
gives 69, 128 and 197 px) and retries galaxies that failed.

Normally a chunk's galaxies are processed in memory and saved in one transaction with
the chunk's ``done`` state. A chunk delivered again after its worker died is processed
one galaxy at a time, each saved at once, with the galaxy in hand recorded, so that a
galaxy which kills the worker is identified and, after a few deaths, failed with the
reason (see :mod:`catalogue.services.runs`).

A galaxy that cannot be preprocessed gets a failed result with the reason and leaves the
learning sample (it stays in the catalogue); one that succeeds later returns to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction

from catalogue import failure_reasons
from catalogue.models import Galaxy, GalaxyStatus, Image, ImageStore, Preprocessed, Run, Split, StoredImage, Survey
from catalogue.services import faults, runs
from catalogue.services.cutouts import cutout_for_preprocessing, usable_image
from catalogue.services.image_store import allocate_rows, get_or_create_store, write_images
from pipeline.bundles.sample import assign_splits
from pipeline.images.colour import ColourChannels, colour_channels
from pipeline.images.photometry import cosmology, pixel_size_kpc
from pipeline.images.preprocess import ImageMeta, PreprocessedImage, preprocess, remove_stars
from pipeline.presets import image_bands, preset

log = logging.getLogger(__name__)

PREPROCESS_FAILED = "preprocessing failed"
#: The stores a galaxy's i cutout fills, beside the g one.
COLOUR_CHANNELS = (ImageStore.Channel.I, ImageStore.Channel.COLOUR)


def galaxies_to_preprocess(
    survey: Survey, resolutions: Iterable[int], force: bool = False, bands: Iterable[str] = ("g",)
) -> list[int]:
    """Ids of the survey's galaxies with a usable g image that lack a result at any of ``resolutions``
    (or, with ``i`` in ``bands``, have an i cutout that was never tried)."""
    candidates = Galaxy.objects.filter(survey=survey, images__band="g", images__status=Image.Status.OK).exclude(
        status=GalaxyStatus.REJECTED
    )
    if not force:
        done = Galaxy.objects.filter(survey=survey, preprocessed__status=Preprocessed.Status.OK)
        for resolution in resolutions:
            written = Galaxy.objects.filter(
                survey=survey,
                stored_images__store__resolution=resolution,
                stored_images__store__channel=ImageStore.Channel.G,
                stored_images__written=True,
            )
            done = done.filter(pk__in=written.values("pk"))
        if "i" in bands:
            untried = with_i_cutout(survey).filter(preprocessed__i_band="")
            done = done.exclude(pk__in=untried.values("pk"))
        candidates = candidates.exclude(pk__in=done.values("pk"))
    return list(candidates.order_by("id").values_list("id", flat=True))


def plan(
    survey: Survey,
    preset_name: str,
    *,
    force: bool = False,
    resolutions: Iterable[int] | None = None,
    chunk_size: int | None = None,
) -> runs.Plan:
    """The galaxies still to preprocess at ``resolutions`` (default: the preset's), in chunks.

    Raises
    ------
    ValueError
        for an unknown preset, a resolution under 8 px or a chunk size under 1.
    """
    config = preset(preset_name)
    resolutions = tuple(sorted({int(r) for r in (resolutions or config["resolutions"])}))
    if not resolutions or any(r < 8 for r in resolutions):
        raise ValueError(f"resolutions must be at least 8 px, got {resolutions}")
    chunk_size = int(chunk_size or config["chunk_size"])
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    bands = image_bands(config)
    ids = galaxies_to_preprocess(survey, resolutions, force, bands)

    def allocate(_run: Run) -> None:
        due, coloured = set(ids), []
        if "i" in bands:
            coloured = [pk for pk in with_i_cutout(survey).order_by("id").values_list("pk", flat=True) if pk in due]
        for resolution in resolutions:
            allocate_rows(get_or_create_store(survey, resolution), ids)
            for channel in COLOUR_CHANNELS if coloured else ():
                allocate_rows(get_or_create_store(survey, resolution, channel), coloured)

    every = ", ".join(f"{r} px" for r in resolutions)
    return runs.Plan(
        chunks=[ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)],
        config={"chunk_size": chunk_size, "image_bands": list(bands)},
        resolutions=resolutions,
        prepare=allocate,
        idle_message=f"nothing to do: every galaxy is preprocessed at {every}",
    )


def with_i_cutout(survey: Survey):
    """The survey's galaxies with an accepted i cutout."""
    return Galaxy.objects.filter(survey=survey, images__band="i", images__status=Image.Status.OK)


def inputs() -> dict:
    """Nothing beyond the preset: the registry's version stands for the code."""
    return {}


@dataclass
class GalaxyResult:
    galaxy: Galaxy
    result: PreprocessedImage | None = None
    error: str = ""
    colour: ColourChannels | None = None
    i_band: str = ""  # "ok", why the i channels failed, or "" (not asked for, no i cutout)


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    """Preprocess a claimed chunk (see the module docstring)."""
    run = claim.run
    galaxies = list(Galaxy.objects.filter(pk__in=claim.items).select_related("survey").prefetch_related("images").order_by("id"))
    pixel_kpc = _pixel_sizes_kpc(galaxies, run)
    writer = _Writer(run, [g.pk for g in galaxies])
    results: list[GalaxyResult] = []
    try:
        for galaxy in galaxies:
            context.check()
            if claim.careful:
                crashes = claim.poisoned.get(galaxy.pk)
                if crashes:
                    item = GalaxyResult(galaxy, error=f"the worker process died {crashes} times preprocessing this galaxy")
                else:
                    context.holding(galaxy.pk)
                    item = _preprocess_one(galaxy, run, pixel_kpc)
                writer.save([item])
            else:
                item = _preprocess_one(galaxy, run, pixel_kpc)
            results.append(item)
    except SoftTimeLimitExceeded:
        handled = {r.galaxy.pk for r in results}
        reason = "the chunk reached its soft time limit before this galaxy"
        results += [GalaxyResult(g, error=reason) for g in galaxies if g.pk not in handled]
    except runs.RunCancelled:
        if not claim.careful:
            writer.save(results)  # keep what was done before the cancellation
        raise
    reasons = failure_reasons.count_reasons(r.error for r in results if r.result is None)
    outcome = runs.ChunkOutcome(done=sum(r.result is not None for r in results), failed=sum(r.result is None for r in results))
    if len(claim.items) > len(galaxies):  # ids whose galaxy was deleted meanwhile
        outcome.failed += len(claim.items) - len(galaxies)
        reasons["the galaxy was deleted before it was preprocessed"] = len(claim.items) - len(galaxies)
    outcome.reasons = reasons
    writer.save([] if claim.careful else results, complete=(claim, outcome))
    return outcome


def _preprocess_one(galaxy: Galaxy, run: Run, pixel_kpc: dict[int, float]) -> GalaxyResult:
    """One galaxy through the science; any error becomes the galaxy's failure reason (an
    error of the i band alone, the reason its i channels are missing)."""
    faults.before_item(galaxy.objid)
    resolutions = tuple(run.resolutions)
    try:
        cutout = cutout_for_preprocessing(galaxy)
        meta = ImageMeta(redshift=galaxy.z, lum_dist_mpc=galaxy.lum_dist_mpc, pixel_kpc=pixel_kpc[galaxy.pk])
        removal = remove_stars(cutout.data, cutout.psf_fwhm_px, cutout.prior_xy, cutout.seed)
        result = preprocess(removal.cleaned, meta, resolutions, n_stars_removed=len(removal.stars))
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # one bad galaxy never stops the chunk
        error = _reason(exc)
        log.info("preprocess failed for %s: %s", galaxy.objid, error)
        return GalaxyResult(galaxy, error=error)
    item = GalaxyResult(galaxy, result=result)
    if "i" in run.config.get("image_bands", ()) and usable_image(galaxy, "i") is not None:
        try:
            i_cutout = cutout_for_preprocessing(galaxy, "i")
            item.colour = colour_channels(removal, i_cutout.data, i_cutout.psf_fwhm_px, resolutions, cutout.seed)
            item.i_band = "ok"
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            item.i_band = _reason(exc)
    return item


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:280]


def _pixel_sizes_kpc(galaxies: list[Galaxy], run: Run) -> dict[int, float]:
    """Physical pixel size (kpc) per galaxy id, in one vectorised cosmology call for the chunk."""
    images = {g.pk: usable_image(g) for g in galaxies}
    usable = [g for g in galaxies if images[g.pk] is not None and g.z is not None]
    if not usable:
        return {}
    scales = np.array([images[g.pk].pixscale_arcsec for g in usable])
    cosmo = cosmology(run.survey.h0, run.survey.om0)
    sizes = np.atleast_1d(pixel_size_kpc(scales, np.array([g.z for g in usable]), cosmo))
    return {g.pk: float(size) for g, size in zip(usable, sizes, strict=True)}


class _Writer:
    """Saves results: images to the store rows, then rows and the ledger in one transaction."""

    def __init__(self, run: Run, galaxy_ids: list[int]):
        self.run = run
        stores = ImageStore.objects.filter(survey=run.survey, resolution__in=run.resolutions)
        self.stores = {s.resolution: s for s in stores if s.channel == ImageStore.Channel.G}
        self.colour_stores = {(s.resolution, s.channel): s for s in stores if s.channel != ImageStore.Channel.G}
        missing = set(run.resolutions) - set(self.stores)
        if missing:
            raise RuntimeError(f"run #{run.pk} has no image store at {sorted(missing)} px; start it with start_stage")
        self.rows = {
            key: dict(StoredImage.objects.filter(store=store, galaxy_id__in=galaxy_ids).values_list("galaxy_id", "row"))
            for key, store in [*self.stores.items(), *self.colour_stores.items()]
        }
        # A run for g alone leaves what an earlier run said of the i band (its images stay).
        self.updated_fields = [
            *("run", "status", "error", "scaling_value", "scaling_fallback", "noise_level", "n_stars_removed", "features")
        ]
        if "i" in run.config.get("image_bands", ()):
            self.updated_fields += ["i_band", "i_scaling_value"]

    def has_colour_rows(self, galaxy_id: int) -> bool:
        """Whether the run allocated the galaxy rows in every i and g - i store it writes."""
        keys = [(resolution, channel) for resolution in self.run.resolutions for channel in COLOUR_CHANNELS]
        return all(galaxy_id in self.rows.get(key, {}) for key in keys)

    def save(self, results: list[GalaxyResult], complete: tuple | None = None) -> None:
        ok = [r for r in results if r.result is not None]
        for item in ok:
            if item.colour is not None and not self.has_colour_rows(item.galaxy.pk):
                # An i cutout that arrived after the run was planned: the next run stores it.
                item.colour, item.i_band = None, ""
        coloured = [r for r in ok if r.colour is not None]
        for resolution, store in self.stores.items():
            if ok:
                rows = np.array([self.rows[resolution][r.galaxy.pk] for r in ok])
                write_images(store, rows, np.stack([r.result.resized[resolution] for r in ok]))
        for (resolution, channel), store in self.colour_stores.items():
            if coloured:
                rows = np.array([self.rows[(resolution, channel)][r.galaxy.pk] for r in coloured])
                maps = [r.colour.log_resized if channel == ImageStore.Channel.I else r.colour.colour for r in coloured]
                write_images(store, rows, np.stack([m[resolution] for m in maps]))
        with transaction.atomic():
            if results:
                Preprocessed.objects.bulk_create(
                    [self._row(r) for r in results],
                    update_conflicts=True,
                    unique_fields=["galaxy"],
                    update_fields=self.updated_fields,
                )
                for stores, done in ((self.stores, ok), (self.colour_stores, coloured)):
                    if done:
                        StoredImage.objects.filter(store__in=stores.values(), galaxy_id__in=[r.galaxy.pk for r in done]).update(
                            written=True
                        )
                _update_learning_sample(results)
            if complete is not None:
                runs.complete_chunk(*complete)

    def _row(self, item: GalaxyResult) -> Preprocessed:
        row = Preprocessed(galaxy=item.galaxy, run=self.run)
        if item.result is None:
            row.status, row.error = Preprocessed.Status.FAILED, item.error
            return row
        result = item.result
        row.status, row.error = Preprocessed.Status.OK, ""
        row.scaling_value, row.noise_level = result.scaling_value, result.noise_level
        row.scaling_fallback = result.scaling_fallback
        row.n_stars_removed, row.features = result.n_stars_removed, result.features
        row.i_band = item.i_band
        row.i_scaling_value = item.colour.scaling_value if item.colour is not None else None
        return row


def _update_learning_sample(results: list[GalaxyResult]) -> None:
    """Failed galaxies leave the learning sample with the reason; recovered ones come back."""
    failed = [r for r in results if r.result is None and r.galaxy.status == GalaxyStatus.OK]
    for item in failed:
        Galaxy.objects.filter(pk=item.galaxy.pk).update(
            status=GalaxyStatus.EXCLUDED, split=Split.NONE, status_reason=f"{PREPROCESS_FAILED}: {item.error}"[:300]
        )
    recovered = [
        r.galaxy
        for r in results
        if r.result is not None
        and r.galaxy.status == GalaxyStatus.EXCLUDED
        and r.galaxy.status_reason.startswith(PREPROCESS_FAILED)
    ]
    if recovered:
        objids = np.array([g.objid for g in recovered], dtype=np.int64)
        splits = assign_splits(objids, np.ones(len(objids), bool), recovered[0].survey.split_seed)
        for galaxy, split in zip(recovered, splits, strict=True):
            Galaxy.objects.filter(pk=galaxy.pk).update(status=GalaxyStatus.OK, split=str(split), status_reason="")


def record_given_up(claim: runs.ChunkClaim, reason: str) -> runs.ChunkOutcome:
    """A chunk the engine gave up on: its galaxies without a result from this run fail with the reason."""
    done = set(
        Preprocessed.objects.filter(run=claim.run, galaxy_id__in=claim.items, status=Preprocessed.Status.OK).values_list(
            "galaxy_id", flat=True
        )
    )
    galaxies = list(Galaxy.objects.filter(pk__in=claim.items).exclude(pk__in=done).select_related("survey"))
    items = [GalaxyResult(g, error=reason) for g in galaxies]
    Preprocessed.objects.bulk_create(
        [Preprocessed(galaxy=i.galaxy, run=claim.run, status=Preprocessed.Status.FAILED, error=reason[:300]) for i in items],
        update_conflicts=True,
        unique_fields=["galaxy"],
        update_fields=["run", "status", "error"],
    )
    _update_learning_sample(items)
    return runs.ChunkOutcome(done=len(done), failed=len(claim.items) - len(done))


def summarise_run(run: Run) -> dict:
    """The failures of a finished run, by objid and reason."""
    failures = [
        {"objid": objid, "reason": error}
        for objid, error in Preprocessed.objects.filter(run=run, status=Preprocessed.Status.FAILED)
        .order_by("galaxy__objid")
        .values_list("galaxy__objid", "error")
    ]
    return {"failures": failures}


HOOKS = runs.StageHooks(body=run_chunk, on_give_up=record_given_up, on_finish=summarise_run)
