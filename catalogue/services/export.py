"""The galaxy catalogue as a stream of bytes: which rows and columns, in which order, through the writers.

Rows come from the database as a stream (:mod:`catalogue.services.writers` writes them), so
a 700,000-row catalogue is never built in memory: the API streams it, ``export_catalogue``
writes it to a file. On PostgreSQL the database formats the CSV body and the FITS records
itself (:mod:`catalogue.services.export_sql`); elsewhere, and for VOTable and Parquet,
Django's row iterator feeds the writers. The rows carry prediction columns joined in SQL
(:class:`catalogue.selectors.PredictionColumns`): the catalogue's M/L by default, one named
model's with ``--model``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from astropy.table import MaskedColumn, Table
from django.db import connection, transaction
from django.db.models import QuerySet

from catalogue.columns import GALAXY_COLUMNS, Column
from catalogue.models import Galaxy, Survey
from catalogue.selectors import (
    PredictionColumns,
    catalogue_ml_columns,
    every_survey,
    galaxies,
    one_model_columns,
    prediction_model,
    resolve_model_set,
)
from catalogue.services import export_sql, writers
from catalogue.services.output_paths import export_target, write_file
from pipeline.learning.named_models import CATALOGUE_MODEL

#: The columns of a catalogue row, and those a model's predictions add (catalogue.columns).
EXPORT_COLUMNS: tuple[Column, ...] = GALAXY_COLUMNS
FORMATS = writers.FORMATS
CONTENT_TYPES = writers.CONTENT_TYPES


def catalogue_columns(predicted: PredictionColumns | None) -> tuple[Column, ...]:
    return EXPORT_COLUMNS + (predicted.columns if predicted is not None else ())


def catalogue_meta(survey: Survey | None, predicted: PredictionColumns | None) -> dict:
    """Table metadata: the survey, its cosmology and whose predictions the rows carry."""
    meta = {
        "SURVEY": survey.name if survey else "all",
        "COSMO": f"FlatLambdaCDM H0={survey.h0} Om0={survey.om0}" if survey else "per survey (see each survey)",
    }
    if predicted is not None and predicted.columns:
        meta["MODEL"] = predicted.label
    return meta


def catalogue_rows(queryset: QuerySet[Galaxy], predicted: PredictionColumns | None) -> Iterator[tuple]:
    """Row tuples in :func:`catalogue_columns` order, from a database iterator (survey, objid order).

    ``queryset`` carries ``predicted``'s columns already (:meth:`PredictionColumns.annotate`).
    """
    names = [c.name for c in EXPORT_COLUMNS]
    rows = queryset.order_by("survey_id", "objid")
    if predicted is None:
        return rows.values_list(*names).iterator(chunk_size=writers.ROWS_PER_BATCH)
    names += [predicted.attribute(c.name) for c in predicted.columns]
    return (_flat_prediction(row) for row in rows.values_list(*names).iterator(chunk_size=writers.ROWS_PER_BATCH))


def _flat_prediction(row: tuple) -> tuple:
    """The flag as 0/1 (None without a prediction) and the reasons as one string."""
    *head, flag, reasons = row
    return (*head, None if flag is None else int(flag), "; ".join(reasons or []))


@contextmanager
def snapshot():
    """One consistent view of the tables for a count followed by the rows (PostgreSQL: REPEATABLE READ)."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def database_formats_rows() -> bool:
    """Whether the database writes the CSV body and FITS values itself (PostgreSQL) or Python does."""
    return connection.vendor == "postgresql"


def stream_catalogue(
    fmt: str, queryset: QuerySet[Galaxy], survey: Survey | None = None, predicted: PredictionColumns | None = None
) -> Iterator[bytes]:
    """The catalogue of ``queryset`` in ``fmt`` as chunks of bytes, with ``predicted``'s columns
    (which ``queryset`` carries already: :meth:`PredictionColumns.annotate`).

    On PostgreSQL the CSV and ECSV bodies come from COPY and the FITS records from a binary
    COPY (:mod:`catalogue.services.export_sql`); elsewhere, and for the other formats, from
    Django's row iterator.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    columns = catalogue_columns(predicted)
    meta = catalogue_meta(survey, predicted)
    in_database = database_formats_rows()
    with snapshot():
        if fmt in writers.TEXT_HEADERS:
            yield writers.TEXT_HEADERS[fmt](columns, meta)
            if in_database:
                yield from export_sql.copy_csv_body(queryset, columns, predicted)
            else:
                yield from writers.csv_body(catalogue_rows(queryset, predicted))
        elif fmt == "fits":
            count = queryset.count()
            if in_database:
                dtype = writers.fits_dtype(columns)
                records = export_sql.fits_records(queryset, columns, predicted, dtype, writers.FITS_INT_NULL)
            else:
                rows = catalogue_rows(queryset, predicted)
                records = (writers.fits_records(writers.fits_values(batch, columns), columns) for batch in writers.batches(rows))
            yield from writers.write_fits(columns, meta, records, count)
        else:
            yield from writers.WRITERS[fmt](columns, meta, catalogue_rows(queryset, predicted))


def export_catalogue(
    out: str | Path, fmt: str, survey: Survey | None = None, model_name: str | None = None, model_set: str | None = None
) -> int:
    """Write the catalogue (one survey or all) to ``out``; returns the number of galaxies.

    The rows carry the catalogue's M/L (:mod:`catalogue.selectors.catalogue_ml`); ``model_name``
    puts the predictions of the model of that name in their place: of the model set ``model_set``
    (``survey@run`` or a training survey's name) when given, else of the set applied to the survey
    last. The file is written next to its target (through a symlink, never over anything but a
    regular file) and moved into place when complete, with the permissions the umask gives a new file.

    Raises
    ------
    ValueError
        for an unknown format or model, or a model without predictions.
    ExportError
        (a ValueError, :mod:`catalogue.services.output_paths`) when the file cannot be written there.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if model_set and not model_name:
        raise ValueError(f"a model set chooses predictions: give the model as well (--model {CATALOGUE_MODEL})")
    export_target(out)  # a path that cannot be written is refused before any query
    if model_name:
        predicted = one_model_columns(prediction_model(survey, model_name, resolve_model_set(model_set) if model_set else None))
    else:
        predicted = catalogue_ml_columns([survey] if survey else every_survey())
    queryset = galaxies(survey)
    write_file(out, stream_catalogue(fmt, predicted.annotate(queryset), survey, predicted))
    return queryset.count()


#: The experiments table's columns: (name, type, unit, description, how to read it from a row).
EXPERIMENT_COLUMNS = (
    ("experiment", str, None, "the paper's experiment (Table 1, Table B.1, Fig. 8, significance, ...)", lambda r: r.experiment),
    ("method", str, None, "the model or comparison of the row", lambda r: r.method),
    ("loss", str, None, "the loss the method was optimised on", lambda r: r.loss),
    ("feature_groups", str, None, "the feature groups it read, space-separated", lambda r: " ".join(r.feature_groups)),
    ("l1", float, None, "mean |p - t| / max(e, 0.05 t) on the test split", lambda r: r.l1),
    ("l2", float, None, "root mean square of (p - t) / max(e, 0.05 t)", lambda r: r.l2),
    ("rmsle_dex", float, "dex", "root mean square of log10(p / t)", lambda r: r.rmsle),
    ("median_l1", float, None, "median of |p - t| / max(e, 0.05 t)", lambda r: r.median_l1),
    ("within_015_dex", float, None, "fraction of the test split within 0.15 dex", lambda r: r.within_015_dex),
    ("n", int, None, "test galaxies", lambda r: r.n),
    ("ks_pvalue", float, None, "one-sided two-sample KS test of the per-galaxy L1", lambda r: r.details.get("ks_pvalue")),
    ("bootstrap_pvalue", float, None, "bootstrap of the mean L1 gain", lambda r: r.details.get("bootstrap_pvalue")),
)


def experiment_table(rows) -> Table:
    """An experiments run's rows as a table with units and descriptions; a value a row lacks is masked."""
    table = Table()
    for name, kind, unit, description, read in EXPERIMENT_COLUMNS:
        values = [read(row) for row in rows]
        filled = [kind() if value is None else value for value in values]
        mask = [value is None for value in values]
        table[name] = MaskedColumn(filled, mask=mask, dtype=kind, unit=unit, description=description)
    return table
