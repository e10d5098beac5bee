"""Prediction jobs: a user's sample taken in (limits checked first), its results as a table, and its removal.

What happens between (unpacking, ingest into a private survey, the apply stages) is
:mod:`catalogue.orchestration.prediction_jobs`; this module writes the job's record and
files and reads its results.

Every limit (settings ``PREDICTION_JOB_*``) is checked when the job is submitted, before it
exists: the bytes uploaded, the bytes and entries its archives unpack to (from their
headers), the galaxies in its table, the jobs the user has queued or running. A bad entry,
a bad row or a bad cutout does not refuse the job: it is listed in the job's faults and the
other galaxies go on.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

import numpy as np
from astropy.table import MaskedColumn, Table
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile

from catalogue.columns import CATALOGUE_ML_COLUMNS, PREDICTION_COLUMNS, Column, column
from catalogue.models import Galaxy, ModelSet, PredictionJob, Preprocessed, Survey
from catalogue.selectors import catalogue_ml_columns, named_models
from catalogue.selectors import prediction_jobs as jobs
from catalogue.selectors.clock import database_now
from catalogue.services import writers
from pipeline.bundles import archive
from pipeline.bundles.reader import CATALOGUE_NAMES, SAMPLE_REQUIRED_COLUMNS, VOTABLE_SUFFIXES, BundleError, read_table

#: Where a job's uploaded table is kept, under its own name (the faults of its rows name it).
TABLE_FOLDER = "table"
TABLE_SUFFIXES = (".csv", ".fits", ".fit", *sorted(VOTABLE_SUFFIXES))
FITS_SUFFIXES = (".fits", ".fit")


class JobRefused(ValueError):
    """A submission refused before any work; ``status`` is the HTTP status that says why (400, 413, 429)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Checked:
    """What a submission holds, as checked: its archives' listings and the table's galaxies."""

    unpacked_bytes: int
    n_rows: int
    n_cutouts: int


@contextmanager
def local_copy(upload: UploadedFile) -> Iterator[Path]:
    """The uploaded file as a local path (Django keeps small uploads in memory), with its name's suffix."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    suffix = "".join(PurePosixPath(upload.name or "upload").suffixes[-2:])
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        upload.seek(0)
        shutil.copyfileobj(upload, handle)
        handle.flush()
        yield Path(handle.name)
    upload.seek(0)


def _is_fits(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in FITS_SUFFIXES


def _table_rows(path: Path, label: str) -> int:
    """The galaxies a table holds, after checking it reads and has the columns a sample needs."""
    try:
        table = read_table(path)
    except BundleError as exc:
        raise JobRefused(f"{label}: {exc}") from None
    missing = [c for c in SAMPLE_REQUIRED_COLUMNS if c not in table.colnames]
    if missing:
        raise JobRefused(
            f"{label} lacks column(s) {', '.join(missing)}: a sample's table needs {', '.join(SAMPLE_REQUIRED_COLUMNS)} "
            f"(optional: magerr_g, mag_i, ra, dec); it has {', '.join(table.colnames) or 'none'}"
        )
    if len(table) == 0:
        raise JobRefused(f"{label} has a header but no rows")
    return len(table)


def _table_in_archive(path: Path, listing: archive.Listing) -> int | None:
    """Rows of the bundle catalogue an archive carries (None if it carries none)."""
    names = [e for e in listing.entries if archive.wanted(e, None)[0] in CATALOGUE_NAMES]
    if not names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        only = {PurePosixPath(names[0].name.replace("\\", "/")).name}
        archive.extract(path, Path(tmp), only=only)
        found = next(Path(tmp).iterdir(), None)
        if found is None:
            raise JobRefused(f"{names[0].name} in {path.name} could not be unpacked")
        return _table_rows(found, names[0].name)


def check_submission(samples: list[UploadedFile], table: UploadedFile | None) -> Checked:
    """Check a submission against the limits without unpacking it; JobRefused naming the first limit passed."""
    if not samples:
        raise JobRefused(
            "no sample: send an archive (zip or tar, gzip allowed) of FITS cutouts, or the cutouts themselves, as 'sample'"
        )
    uploaded = sum(f.size or 0 for f in samples) + (table.size or 0 if table is not None else 0)
    if uploaded > settings.PREDICTION_JOB_MAX_UPLOAD_BYTES:
        raise JobRefused(
            f"the upload is {uploaded:,} bytes; a job takes at most {settings.PREDICTION_JOB_MAX_UPLOAD_BYTES:,}", 413
        )
    unpacked, cutouts, rows = 0, 0, None
    for sample in samples:
        if _is_fits(sample.name or ""):
            unpacked += sample.size or 0
            cutouts += 1
            continue
        with local_copy(sample) as path:
            try:
                listing = archive.scan(
                    path,
                    settings.PREDICTION_JOB_MAX_UNPACKED_BYTES - unpacked,
                    settings.PREDICTION_JOB_MAX_ENTRIES,
                    label=f"sample {sample.name}",
                )
            except archive.ArchiveError as exc:
                status = 413 if "limit" in str(exc) else 400
                raise JobRefused(str(exc), status) from None
            unpacked += listing.unpacked_bytes
            cutouts += sum(1 for e in listing.entries if archive.CUTOUT_NAME.match(PurePosixPath(e.name).name or ""))
            if table is None and rows is None:
                rows = _table_in_archive(path, listing)
    if unpacked > settings.PREDICTION_JOB_MAX_UNPACKED_BYTES:
        raise JobRefused(
            f"the sample unpacks to {unpacked:,} bytes; a job takes at most {settings.PREDICTION_JOB_MAX_UNPACKED_BYTES:,}", 413
        )
    if table is not None:
        suffix = PurePosixPath(table.name or "").suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise JobRefused(f"table {table.name}: give a CSV (.csv), FITS (.fits) or VOTable (.vot, .xml) file")
        with local_copy(table) as path:
            rows = _table_rows(path, f"table {table.name}")
    if rows is None:
        raise JobRefused(
            "no table: send one as 'table' (CSV, VOTable or FITS with objid, z, mag_g), "
            "or put a bundle's catalogue.csv in the archive"
        )
    limit = settings.PREDICTION_JOB_MAX_GALAXIES
    if rows > limit or cutouts > 2 * limit:
        raise JobRefused(f"the sample has {rows:,} galaxies; a job takes at most {limit:,}: split it into several jobs", 413)
    return Checked(unpacked, rows, cutouts)


def submit(user, samples: list[UploadedFile], table: UploadedFile | None, model_set: ModelSet) -> PredictionJob:
    """A QUEUED job of the user's sample, its files stored; JobRefused (before anything is stored) past a limit.

    The caller sends it to the workers (:func:`catalogue.orchestration.prediction_jobs.send`).
    """
    purge_expired()
    if jobs.running_jobs(user) >= settings.PREDICTION_JOB_MAX_RUNNING:
        raise JobRefused(
            f"you have {settings.PREDICTION_JOB_MAX_RUNNING} job(s) queued or running, the most at once: "
            "wait for one to finish or cancel it",
            429,
        )
    checked = check_submission(samples, table)
    job = PredictionJob.objects.create(
        owner=user,
        model_set=model_set,
        upload_bytes=sum(f.size or 0 for f in samples) + (table.size or 0 if table is not None else 0),
        unpacked_bytes=checked.unpacked_bytes,
        n_rows=checked.n_rows,
        message="waiting for a worker",
        destruction=database_now() + timedelta(days=settings.PREDICTION_JOB_DAYS),
    )
    stored = []
    try:
        for n, sample in enumerate(samples):
            safe = PurePosixPath((sample.name or "sample").replace("\\", "/")).name or "sample"
            stored.append(default_storage.save(f"{job.storage_prefix}upload/{n:05d}_{safe}", sample))
        table_name = ""
        if table is not None:
            suffix = PurePosixPath(table.name or "").suffix.lower()
            original = PurePosixPath((table.name or "table").replace("\\", "/")).name or f"table{suffix}"
            table_name = default_storage.save(f"{job.storage_prefix}{TABLE_FOLDER}/{original}", table)
    except BaseException:
        delete(job)
        raise
    PredictionJob.objects.filter(pk=job.pk).update(uploads=stored, table_name=table_name)
    job.uploads, job.table_name = stored, table_name
    return job


def storage_files(job: PredictionJob) -> list[str]:
    """Every file the job has in the media storage: its uploads and its private survey's cutouts."""
    names = [*job.uploads, *([job.table_name] if job.table_name else [])]
    if job.survey_id is not None:
        names += [name for name in job.survey.galaxies.values_list("images__file", flat=True) if name]
    return names


def delete(job: PredictionJob) -> None:
    """Delete a job, its private survey (galaxies, predictions, image stores) and its files."""
    names = storage_files(job)
    survey_id = job.survey_id
    job.delete()
    if survey_id is not None:
        Survey.objects.filter(pk=survey_id, owner__isnull=False).delete()  # its image stores delete their files
    for name in names:
        default_storage.delete(name)


def purge_expired() -> int:
    """Delete the jobs past their destruction time (not one still running); how many."""
    expired = list(jobs.expired_jobs().exclude(phase__in=PredictionJob.ACTIVE))
    for job in expired:
        delete(job)
    return len(expired)


# --- results -------------------------------------------------------------------------

GALAXY_FIELDS = ("objid", "ra", "dec", "z", "mag_g", "magerr_g", "mag_i", "lum_dist_mpc", "lum_g")
STATUS_COLUMNS = (
    Column(
        "status", None, "predicted, failed (see reason) or unpredicted (no model had its inputs)", "meta.code.status", "str", 12
    ),
    Column("reason", None, "why the galaxy failed: the ingest's or preprocessing's reason", "meta.note", "str", 300),
)
RESULT_FORMATS = writers.FORMATS


def _model_columns(name: str) -> list[tuple[Column, str, str]]:
    """A named model's prediction columns as ``<model>_<column>`` (described as that model's), each with
    the model and the prediction field it holds."""
    return [
        (
            Column(f"{name}_{c.name}", c.unit, f"{name}: {c.description}", c.ucd, c.kind, c.width, f"{name} {c.label}"),
            name,
            c.name,
        )
        for c in PREDICTION_COLUMNS
    ]


def _set_models(job: PredictionJob) -> list[str]:
    return sorted(named_models(job.model_set)) if job.model_set is not None else []


def result_columns(job: PredictionJob) -> tuple[Column, ...]:
    """The results table's columns: the galaxy, its status, the catalogue's M/L, then every named model's."""
    per_model = [c for name in _set_models(job) for c, _, _ in _model_columns(name)]
    return (*(column(n) for n in GALAXY_FIELDS), *STATUS_COLUMNS, *CATALOGUE_ML_COLUMNS, *per_model)


def _status(galaxy: Galaxy, failed: dict[int, str], predicted: bool) -> tuple[str, str]:
    if galaxy.status == "rejected":
        return "failed", galaxy.status_reason
    if galaxy.pk in failed:
        return "failed", failed[galaxy.pk] or "preprocessing failed"
    return ("predicted", "") if predicted else ("unpredicted", "")


def _cell(prediction: dict | None, field: str):
    """One prediction field as a table cell: the flag as 0/1, the reasons as one string."""
    if prediction is None:
        return None
    value = prediction.get(field)
    if field == "support_reasons":
        return "; ".join(value or [])
    if field == "out_of_support" and value is not None:
        return int(value)
    return value


def results_table(job: PredictionJob) -> Table:
    """Every galaxy of the job, one row each by objid, with its predictions; units and descriptions on every column."""
    survey = job.survey
    rows = Galaxy.objects.filter(survey=survey).order_by("objid") if survey is not None else Galaxy.objects.none()
    catalogue = catalogue_ml_columns([survey] if survey is not None else [])
    failed = dict(
        Preprocessed.objects.filter(galaxy__survey=survey, status=Preprocessed.Status.FAILED).values_list("galaxy_id", "error")
    )
    by_galaxy: dict[int, dict[str, dict]] = {}
    for p in jobs.job_predictions(job):
        by_galaxy.setdefault(p["galaxy_id"], {})[p["model__name"]] = p
    per_model = [triple for name in _set_models(job) for triple in _model_columns(name)]
    columns = result_columns(job)
    values: dict[str, list] = {c.name: [] for c in columns}
    for galaxy in catalogue.annotate(rows):
        own = by_galaxy.get(galaxy.pk, {})
        for name in GALAXY_FIELDS:
            values[name].append(getattr(galaxy, name))
        status, reason = _status(galaxy, failed, bool(own))
        values["status"].append(status)
        values["reason"].append(reason)
        for name, value in catalogue.values(galaxy).items():
            values[name].append("; ".join(value or []) if name == "support_reasons" else value)
        for c, model, field in per_model:
            values[c.name].append(_cell(own.get(model), field))
    meta = {"JOB": str(job.id), "MODELSET": job.model_set.name if job.model_set else "", "COSMO": _cosmology(survey)}
    table = Table(meta=meta)
    for c in columns:
        table[c.name] = _column(c, values[c.name])
    return table


def _cosmology(survey: Survey | None) -> str:
    return f"FlatLambdaCDM H0={survey.h0} Om0={survey.om0}" if survey is not None else ""


def _column(c: Column, values: list) -> MaskedColumn:
    """A masked column of ``c``'s kind, with its unit and description (None -> masked)."""
    mask = [v is None for v in values]
    if c.kind == "str":
        filled = ["" if v is None else str(v) for v in values]
        return MaskedColumn(filled, name=c.name, dtype=str, description=c.description, mask=mask)
    dtype = np.int64 if c.kind == "int" else np.float64
    filled = [0 if v is None else v for v in values]
    return MaskedColumn(np.asarray(filled, dtype=dtype), name=c.name, unit=c.unit, description=c.description, mask=mask)


def results_bytes(job: PredictionJob, fmt: str) -> bytes:
    """The results table as a file of ``fmt`` (votable, csv, ecsv, fits, parquet); ValueError for another format."""
    if fmt not in RESULT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(RESULT_FORMATS)}")
    return writers.table_bytes(results_table(job), fmt)
