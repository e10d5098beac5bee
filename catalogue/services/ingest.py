"""Ingest a survey bundle into the database: ``ingest_bundle(path) -> IngestReport``.

The same function serves the CLI (``ingest_survey``), the admin and the API. Every bad
row or file is recorded (galaxy status and reason, plus a line in the report); the rest
goes in. Re-ingesting a bundle updates rows in place (upserts keyed on survey + objid,
galaxy + band, galaxy), so it never duplicates anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from catalogue.models import Galaxy, GZ2Votes, Image, Survey
from catalogue.services.galaxy_writer import galaxy_columns, upsert_galaxies
from pipeline import gz2
from pipeline.bundles import reader as bundle
from pipeline.bundles import sample
from pipeline.bundles.reader import CATALOGUE_NAMES, BadImage, BundleError, Rejection
from pipeline.images.stars import stars_in_fields

log = logging.getLogger(__name__)

BATCH_SIZE = 2000

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class IngestReport:
    """What an ingest did: counts, and every rejection with objid and reason."""

    survey: str
    bundle: str
    catalogue_rows: int = 0
    accepted: int = 0
    excluded: int = 0
    rejected: int = 0
    images_stored: int = 0
    images_unchanged: int = 0
    gz2_votes: int = 0
    stars_matched: int = 0
    seconds: float = 0.0
    rejections: list[dict] = field(default_factory=list)
    excluded_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_by_kind(self) -> dict[str, int]:
        return dict(Counter(r["kind"] for r in self.rejections))

    def as_dict(self) -> dict:
        return {
            "survey": self.survey,
            "bundle": self.bundle,
            "catalogue_rows": self.catalogue_rows,
            "accepted": self.accepted,
            "excluded": self.excluded,
            "rejected": self.rejected,
            "images_stored": self.images_stored,
            "images_unchanged": self.images_unchanged,
            "gz2_votes": self.gz2_votes,
            "stars_matched": self.stars_matched,
            "seconds": round(self.seconds, 3),
            "rejected_by_kind": self.rejected_by_kind,
            "excluded_by_reason": self.excluded_by_reason,
            "rejections": self.rejections,
        }

    @property
    def galaxies(self) -> int:
        return self.accepted + self.excluded + self.rejected

    def summary(self) -> str:
        """What was read and what became of it, in counts that add up."""
        lines = [
            f"survey {self.survey}: {self.catalogue_rows} catalogue lines read in {self.seconds:.1f} s",
            f"  {self.galaxies} galaxies: {self.accepted} in the learning sample, {self.excluded} kept outside it, "
            f"{self.rejected} rejected",
        ]
        if self.catalogue_rows != self.galaxies:
            extra = self.catalogue_rows - self.galaxies
            lines.append(
                f"  {extra} line{'s' if extra != 1 else ''} not counted as galaxies (a repeated objid: the first line is kept)"
            )
        lines.append(f"  problems recorded: {len(self.rejections)}, one per line or file (details: --report)")
        lines += [f"    {kind}: {n}" for kind, n in sorted(self.rejected_by_kind.items())]
        lines += [f"    kept outside the learning sample, {reason}: {n}" for reason, n in sorted(self.excluded_by_reason.items())]
        lines.append(f"  images stored: {self.images_stored}, unchanged: {self.images_unchanged}; GZ2 votes: {self.gz2_votes}")
        return "\n".join(lines)


def find_catalogue(path: Path) -> Path:
    for name in CATALOGUE_NAMES:
        if (path / name).exists():
            return path / name
    raise BundleError(f"{path} has no {', '.join(CATALOGUE_NAMES[:-1])} or {CATALOGUE_NAMES[-1]}")


def ingest_bundle(
    path: str | Path,
    name: str | None = None,
    *,
    split_seed: int = 0,
    with_images: bool = True,
    progress: ProgressCallback | None = None,
    owner=None,
) -> IngestReport:
    """Load a survey bundle (docs/bundles.md) into the database.

    Parameters
    ----------
    path : bundle directory.
    name : survey name; defaults to the directory name.
    split_seed : seed of the train/val/test split (stable per objid).
    with_images : check and store the FITS cutouts; False ingests the catalogue alone
        (for cone search or export of a catalogue without images).
    progress : called as ``progress(stage, done, total)``.
    owner : a user for a prediction job's sample: the survey is private to them, and its
        catalogue needs only objid, z and mag_g (``SAMPLE_REQUIRED_COLUMNS``).

    Raises
    ------
    BundleError
        when the bundle is unusable as a whole.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a directory")
    catalogue_path = find_catalogue(path)
    name = name or path.resolve().name
    report = IngestReport(survey=name, bundle=str(path))
    notify = progress or (lambda *_: None)

    table = bundle.read_table(catalogue_path)
    if len(table) == 0:
        raise BundleError(f"{catalogue_path.name} has a header but no rows: nothing to ingest")
    required = bundle.REQUIRED_COLUMNS if owner is None else bundle.SAMPLE_REQUIRED_COLUMNS
    rows = bundle.parse_catalogue(table, catalogue_path.name, required)
    report.catalogue_rows = len(table)
    gswlc = bundle.read_gswlc(path / "gswlc.dat") if (path / "gswlc.dat").exists() else None
    gz2_data = bundle.read_gz2(path / "gz2.csv") if (path / "gz2.csv").exists() else None
    stars = bundle.read_stars(path / "stars.csv") if (path / "stars.csv").exists() else None

    existing = Survey.objects.filter(name=name).first()
    h0, om0 = (existing.h0, existing.om0) if existing else (Survey.h0.field.default, Survey.om0.field.default)
    derived = sample.derive_columns(rows, gswlc, h0, om0)

    image_infos: dict[tuple[int, str], bundle.ImageInfo] = {}
    extra_rejections: list[Rejection] = []
    if with_images:
        _inspect_images(path, rows, image_infos, extra_rejections, notify)
    _refuse_if_nothing_usable(rows, catalogue_path.name)
    survey, _ = Survey.objects.update_or_create(
        name=name,
        defaults={
            "source_path": str(path.resolve()),
            "split_seed": split_seed,
            "has_star_catalogue": stars is not None,
            "owner": owner,
        },
    )

    _refuse_if_nothing_usable(rows, catalogue_path.name)
    outside = sample.learning_sample_reasons(rows, derived)
    learning = np.array([not rows.rejected[j] and not outside[j] for j in range(len(rows))], bool)
    splits = sample.assign_splits(rows.objid, learning, survey.split_seed)
    if stars is not None:
        report.stars_matched = _attach_stars(rows, stars)

    columns = galaxy_columns(survey.pk, rows, derived, outside, splits)
    written: list[str] = []  # image files saved by this ingest: removed again if it rolls back
    superseded: list[str] = []  # files of replaced images: removed once it has committed
    try:
        with transaction.atomic():
            upsert_galaxies(columns, notify)
            ids = dict(Galaxy.objects.filter(survey=survey).values_list("objid", "id"))
            if with_images:
                _store_images(path, survey, ids, image_infos, report, notify, written, superseded)
            if gz2_data is not None:
                report.gz2_votes = _store_gz2(gz2_data, ids, rows, extra_rejections)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    for name in superseded:
        default_storage.delete(name)

    for j in np.flatnonzero(rows.rejected):
        for kind, reason in zip(rows.kinds[j], rows.reasons[j], strict=True):
            report.rejections.append(Rejection(kind, reason, int(rows.objid[j]), int(rows.row[j]), catalogue_path.name).as_dict())
    report.rejections = [r.as_dict() for r in rows.rejections] + report.rejections
    report.rejections += [r.as_dict() for r in extra_rejections]
    report.rejected = int(rows.rejected.sum())
    report.accepted = int(learning.sum())
    report.excluded = len(rows) - report.accepted - report.rejected
    report.excluded_by_reason = dict(Counter(kind for j in range(len(rows)) if not rows.rejected[j] for kind, _ in outside[j]))
    report.seconds = time.perf_counter() - started
    survey.report = report.as_dict()
    survey.save(update_fields=["report", "updated"])
    log.info("ingested survey %s: %d lines, %d problems recorded", name, report.catalogue_rows, len(report.rejections))
    return report


def _refuse_if_nothing_usable(rows, file: str) -> None:
    """A bundle whose every galaxy is rejected is refused before anything is written."""
    if len(rows) and not rows.rejected.all():
        return
    reasons = Counter(kind for kinds in rows.kinds for kind in set(kinds))
    reasons.update(r.kind for r in rows.rejections)
    summary = ", ".join(f"{kind}: {n}" for kind, n in reasons.most_common(5)) or "no row has a usable objid"
    raise BundleError(f"{file}: no usable galaxy, every row is rejected ({summary}); nothing was ingested")


def _inspect_images(path, rows, infos, extra_rejections, notify) -> None:
    """Check each galaxy's g (required) and i (optional) cutouts; reject the galaxy on a bad g.

    Any error while reading one file, expected or not, becomes a rejection of that file
    with the error's text: no file can stop the batch.
    """
    total = len(rows)
    ra, dec = rows.values["ra"], rows.values["dec"]
    for j, objid in enumerate(rows.objid.tolist()):
        if not rows.rejected[j]:
            for band in ("g", "i"):
                file = path / "images" / f"{objid}_{band}.fits"
                if band == "i" and not file.exists():
                    continue
                try:
                    info = bundle.inspect_image(file, float(ra[j]), float(dec[j]))
                    if info.band != band:
                        raise BadImage(f"{file.name} has BAND = {info.band!r} in its header, expected {band!r}")
                except Exception as exc:
                    if not isinstance(exc, BadImage):
                        exc = BadImage(f"{file.name} could not be inspected ({type(exc).__name__}: {exc})")
                    kind = "missing_image" if not file.exists() else "bad_image"
                    if band == "g":
                        rows.reject(j, kind, str(exc))
                    else:
                        extra_rejections.append(Rejection(kind, str(exc), objid, int(rows.row[j]), file.name))
                    continue
                infos[(objid, band)] = info
        if j % 200 == 0 or j == total - 1:
            notify("check images", j + 1, total)


def _attach_stars(rows, stars) -> int:
    """Store the prior point sources that fall inside each galaxy's field of view in extra['stars']."""
    v = rows.values
    star_ra, star_dec = np.asarray(stars["ra"], float), np.asarray(stars["dec"], float)
    star_mag = np.asarray(stars["mag_g"], float)
    galaxy_index, star_index = stars_in_fields(v["ra"], v["dec"], v["d25_arcmin"], star_ra, star_dec)
    for g, s in zip(galaxy_index, star_index, strict=True):
        rows.extra[g].setdefault("stars", []).append([float(star_ra[s]), float(star_dec[s]), float(star_mag[s])])
    return len(galaxy_index)


def _store_images(path, survey, ids, infos, report, notify, written: list[str], superseded: list[str]) -> None:
    """Save new or changed cutouts under fresh names; the caller removes them on rollback."""
    existing = {
        (objid, band): (pk, checksum, file)
        for pk, objid, band, checksum, file in Image.objects.filter(galaxy__survey=survey).values_list(
            "id", "galaxy__objid", "band", "checksum", "file"
        )
    }
    to_write = []
    for n, ((objid, band), info) in enumerate(infos.items(), 1):
        name = f"surveys/{survey.name}/images/{objid}_{band}.fits"
        previous = existing.get((objid, band))
        if previous and previous[1] == info.checksum and default_storage.exists(previous[2]):
            report.images_unchanged += 1
            continue
        # A fresh name (storage adds a suffix when taken): the old file stays until commit.
        stored = default_storage.save(name, ContentFile((path / "images" / f"{objid}_{band}.fits").read_bytes()))
        written.append(stored)
        if previous and previous[2] and previous[2] != stored:
            superseded.append(previous[2])
        to_write.append(
            Image(
                galaxy_id=ids[objid],
                band=band,
                file=stored,
                height=info.height,
                width=info.width,
                pixscale_arcsec=info.pixscale_arcsec,
                psf_fwhm_arcsec=info.psf_fwhm_arcsec,
                checksum=info.checksum,
                status=Image.Status.OK,
                status_reason="",
            )
        )
        report.images_stored += 1
        if n % 200 == 0:
            notify("store images", n, len(infos))
    Image.objects.bulk_create(
        to_write,
        batch_size=BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["galaxy", "band"],
        update_fields=["file", "height", "width", "pixscale_arcsec", "psf_fwhm_arcsec", "checksum", "status", "status_reason"],
    )
    notify("store images", len(infos), len(infos))


def _store_gz2(gz2_data, ids, rows, extra_rejections) -> int:
    objids, fractions, rejections = gz2_data
    extra_rejections.extend(rejections)
    rejected = set(rows.objid[rows.rejected].tolist())
    probabilities = gz2.conditional_to_unconditional(fractions)
    votes = []
    for objid, frac, prob in zip(objids.tolist(), fractions, probabilities, strict=True):
        if objid not in ids:
            reason = "GZ2 row for an objid not in the catalogue"
            extra_rejections.append(Rejection("gz2_unknown_objid", reason, objid, None, "gz2.csv"))
            continue
        if objid in rejected:
            continue
        votes.append(GZ2Votes(galaxy_id=ids[objid], fractions=frac, probabilities=prob))
    GZ2Votes.objects.bulk_create(
        votes,
        batch_size=BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["galaxy"],
        update_fields=["fractions", "probabilities"],
    )
    return len(votes)


def write_report(report: IngestReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.as_dict(), indent=2))
