"""The galaxy catalogue as a stream of bytes in the formats astronomers load.

One writer per format, fed by the database as a stream, so a 700,000-row catalogue is never
built in memory (the API streams it; ``export_catalogue`` writes it to a file). On
PostgreSQL the database formats the CSV body and the FITS records itself (export_sql);
elsewhere, and for VOTable and Parquet, Django's row iterator feeds the writers:

* ``csv``: plain CSV (a header line, then rows; empty fields for missing values), which
  ``Table.read("x.csv")`` and pandas read as they are; no units (use ECSV for those);
* ``ecsv``: astropy's ECSV: the same comma-separated body under a YAML header with every
  column's unit and description and the survey and cosmology metadata;
* ``fits``: a FITS binary table (TUNITn for every unit, survey metadata in the header),
  missing floats as NaN; the row count is taken first, in the same snapshot as the rows;
* ``votable``: VOTable 1.4 TABLEDATA with units, descriptions and the metadata as INFO;
* ``parquet``: Apache Parquet row groups with astropy's column metadata (units, descriptions).

With a model, ``ml_pred`` (solMass/solLum, in the g band) and ``mstar_pred`` (solMass) are joined in SQL.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from math import isfinite
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from django.db import connection, transaction
from django.db.models import FilteredRelation, Q, QuerySet

from catalogue.columns import GALAXY_COLUMNS, PREDICTION_COLUMNS, Column
from catalogue.models import Galaxy, Survey, TrainedModel
from catalogue.selectors import prediction_model
from catalogue.services import export_sql
from catalogue.services.model_sets import resolve_model_set

#: The columns of a catalogue row, and those a model's predictions add (catalogue.columns).
EXPORT_COLUMNS: tuple[Column, ...] = GALAXY_COLUMNS
FORMATS = ("csv", "ecsv", "fits", "votable", "parquet")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ecsv": "text/plain; charset=utf-8",
    "fits": "application/fits",
    "votable": "application/x-votable+xml",
    "parquet": "application/vnd.apache.parquet",
}
ROWS_PER_BATCH = 2_000
FITS_INT_NULL = -1


def catalogue_columns(model: TrainedModel | None) -> tuple[Column, ...]:
    return EXPORT_COLUMNS + (PREDICTION_COLUMNS if model is not None else ())


def catalogue_meta(survey: Survey | None, model: TrainedModel | None) -> dict:
    """Table metadata: the survey, its cosmology and the model of the predictions."""
    meta = {
        "SURVEY": survey.name if survey else "all",
        "COSMO": f"FlatLambdaCDM H0={survey.h0} Om0={survey.om0}" if survey else "per survey (see each survey)",
    }
    if model is not None:
        meta["MODEL"] = f"{model.name} #{model.pk}, run #{model.run_id}"
    return meta


def catalogue_rows(queryset: QuerySet[Galaxy], model: TrainedModel | None) -> Iterator[tuple]:
    """Row tuples in :func:`catalogue_columns` order, from a database iterator (survey, objid order)."""
    names = [c.name for c in EXPORT_COLUMNS]
    rows = queryset.order_by("survey_id", "objid")
    if model is None:
        return rows.values_list(*names).iterator(chunk_size=ROWS_PER_BATCH)
    rows = rows.annotate(pred=FilteredRelation("predictions", condition=Q(predictions__model=model)))
    names += [f"pred__{c.name}" for c in PREDICTION_COLUMNS]
    return (_flat_prediction(row) for row in rows.values_list(*names).iterator(chunk_size=ROWS_PER_BATCH))


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
    fmt: str, queryset: QuerySet[Galaxy], survey: Survey | None = None, model: TrainedModel | None = None
) -> Iterator[bytes]:
    """The catalogue of ``queryset`` in ``fmt`` as chunks of bytes.

    On PostgreSQL the CSV and ECSV bodies come from COPY and the FITS records from a binary
    COPY (:mod:`catalogue.services.export_sql`); elsewhere, and for the other formats, from
    Django's row iterator.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    columns = catalogue_columns(model)
    meta = catalogue_meta(survey, model)
    in_database = database_formats_rows()
    with snapshot():
        if fmt in TEXT_HEADERS:
            yield TEXT_HEADERS[fmt](columns, meta)
            if in_database:
                yield from export_sql.copy_csv_body(queryset, columns, model)
            else:
                yield from _csv_body(catalogue_rows(queryset, model))
        elif fmt == "fits":
            count = queryset.count()
            if in_database:
                records = export_sql.fits_records(queryset, columns, model, _fits_dtype(columns), FITS_INT_NULL)
            else:
                rows = catalogue_rows(queryset, model)
                records = (_fits_records(_fits_values(batch, columns), columns) for batch in _batches(rows))
            yield from write_fits(columns, meta, records, count)
        else:
            yield from WRITERS[fmt](columns, meta, catalogue_rows(queryset, model))


class ExportError(ValueError):
    """The catalogue cannot be written where asked (the message is one line, naming the path)."""


#: What a path that is not a regular file is, by its stat mode.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def export_target(out: str | Path) -> Path:
    """The file an export to ``out`` writes: ``out`` itself, or the file a symlink at ``out`` points to.

    Raises
    ------
    ExportError
        when that is something other than a regular file (a directory, a FIFO, a device),
        which an export never replaces, or when its directory does not exist.
    """
    path = Path(out)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists():
        mode = target.stat().st_mode
        for test, kind in _FILE_KINDS:
            if test(mode):
                where = f"{out} (-> {target})" if target != path else str(out)
                raise ExportError(f"cannot write {where}: it is {kind}, not a regular file; give a file name")
    if not target.parent.is_dir():
        raise ExportError(f"cannot write {out}: the directory {target.parent} does not exist")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_catalogue(
    out: str | Path, fmt: str, survey: Survey | None = None, model_name: str | None = None, model_set: str | None = None
) -> int:
    """Write the catalogue (one survey or all) to ``out``; returns the number of galaxies.

    ``model_name`` adds the predictions of the model of that name: of the model set
    ``model_set`` (``survey@run`` or a training survey's name) when given, else of the set
    applied to the survey last. The file is written next to its target (:func:`export_target`: through a symlink,
    never over anything but a regular file) and moved into place when complete, with the
    permissions the umask gives a new file.

    Raises
    ------
    ValueError
        for an unknown format or model, or a model without predictions.
    ExportError
        (a ValueError) when the file cannot be written there, with the reason in one line.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if model_set and not model_name:
        raise ValueError("a model set chooses predictions: give the model as well (--model g_morph)")
    chosen = resolve_model_set(model_set) if model_set else None
    model = prediction_model(survey, model_name, chosen) if model_name else None
    queryset = Galaxy.objects.all() if survey is None else Galaxy.objects.filter(survey=survey)
    target = export_target(out)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in stream_catalogue(fmt, queryset, survey, model):
                fh.write(chunk)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return queryset.count()


# --- the writers -------------------------------------------------------------------------


def _text(value) -> str:
    """A value as text: floats in their shortest exact form, empty for None, NaN and infinities."""
    if value is None:
        return ""
    if value.__class__ is float:
        return repr(value) if isfinite(value) else ""
    return str(value)


def _td(value) -> str:
    """One TABLEDATA cell; only text needs escaping (numbers never hold <, > or &)."""
    if value.__class__ is str:
        return f"<TD>{escape(value)}</TD>"
    return f"<TD>{_text(value)}</TD>"


def _batches(rows: Iterable[tuple]) -> Iterator[list[tuple]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == ROWS_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_body(rows: Iterable[tuple]) -> Iterator[bytes]:
    for batch in _batches(rows):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([[_text(v) for v in row] for row in batch])
        yield buffer.getvalue().encode()


def csv_header(columns: tuple[Column, ...], meta: dict) -> bytes:  # noqa: ARG001 - plain CSV has no metadata
    return (",".join(c.name for c in columns) + "\n").encode()


def empty_table(columns: tuple[Column, ...], meta: dict) -> Table:
    """A zero-row table with every column's type, unit and description: the header of a stream."""
    table = Table(meta=dict(meta))
    dtypes = {"float": np.float64, "int": np.int64}
    for c in columns:
        dtype = dtypes.get(c.kind, f"U{c.width}")
        table[c.name] = MaskedColumn(np.zeros(0, dtype), unit=c.unit, description=c.description)
    return table


def ecsv_header(columns: tuple[Column, ...], meta: dict) -> bytes:
    """ECSV's YAML header (every column's type, unit, description; the metadata); the body is the CSV one."""
    buffer = io.StringIO()
    empty_table(columns, meta).write(buffer, format="ascii.ecsv", delimiter=",")
    return buffer.getvalue().encode()


TEXT_HEADERS = {"csv": csv_header, "ecsv": ecsv_header}


def votable_frame(document) -> tuple[bytes, bytes]:
    """The XML of a one-table VOTable document around its rows: (all before the first <TR>, all after the last).

    astropy writes the header (fields with units, UCDs, descriptions, INFOs); the rows are
    then written by :func:`tabledata_rows`, since astropy's own TABLEDATA writer tests a
    mask per cell and took 0.1 ms a row.
    """
    buffer = io.BytesIO()
    document.to_xml(buffer, tabledata_format="tabledata")
    xml = buffer.getvalue().decode()
    at = xml.rindex("</TABLE>")  # an empty table has no DATA element: the rows go in here
    return (xml[:at] + "<DATA>\n<TABLEDATA>\n").encode(), ("</TABLEDATA>\n</DATA>\n" + xml[at:]).encode()


def tabledata_rows(rows: Iterable[tuple]) -> bytes:
    """Rows as VOTable TABLEDATA: one <TD> per value, empty where there is none (null)."""
    return "".join(["<TR>" + "".join([_td(v) for v in row]) + "</TR>\n" for row in rows]).encode()


def write_votable(columns, meta, rows) -> Iterator[bytes]:
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    document = from_table(empty_table(columns, {}))
    for key, value in meta.items():
        document.resources[0].infos.append(Info(name=key, value=value))
    header, footer = votable_frame(document)
    yield header
    for batch in _batches(rows):
        yield tabledata_rows(batch)
    yield footer


def _fits_dtype(columns: tuple[Column, ...]) -> np.dtype:
    codes = {"float": ">f8", "int": ">i8"}
    return np.dtype([(c.name, codes.get(c.kind, f"S{c.width}")) for c in columns])


def write_fits(columns, meta, records: Iterable[bytes], count: int) -> Iterator[bytes]:
    """A FITS binary table of ``count`` rows from chunks of its records' bytes (whole records)."""
    dtype = _fits_dtype(columns)
    empty = Table(np.zeros(0, dtype))
    for c in columns:
        empty[c.name].unit, empty[c.name].description = c.unit, c.description
    empty.meta.update(meta)
    buffer = io.BytesIO()
    empty.write(buffer, format="fits")  # astropy's header, descriptions serialised in its comments
    buffer.seek(0)
    header = fits.open(buffer)[1].header
    for i, c in enumerate(columns, 1):
        if c.unit is not None:
            header[f"TUNIT{i}"] = c.unit  # FITS standard units (solLum, solMass), the band in the descriptions
    for i, c in enumerate(columns, 1):
        if c.kind == "int" and c.name != "objid":
            header[f"TNULL{i}"] = FITS_INT_NULL  # no value: read back as masked
    header["NAXIS2"] = count
    yield fits.PrimaryHDU().header.tostring().encode()
    yield header.tostring().encode()
    written, size = 0, dtype.itemsize
    for chunk in records:
        take = min(len(chunk) // size, count - written)  # rows added after the count are left out
        written += take
        yield chunk[: take * size]
    if written < count:  # rows deleted after the count: never, within the snapshot
        raise RuntimeError(f"FITS stream: {count} rows announced, {written} written")
    yield b"\0" * (-(written * size) % 2880)


def _fits_records(batch: list[tuple], columns: tuple[Column, ...]) -> bytes:
    """Rows holding FITS values (no None) as the bytes of FITS binary-table records."""
    records = np.empty(len(batch), _fits_dtype(columns))
    for c, values in zip(columns, zip(*batch, strict=True), strict=True):
        records[c.name] = [v.encode()[: c.width] for v in values] if c.kind == "str" else values
    return records.tobytes()


def _fits_values(batch: list[tuple], columns: tuple[Column, ...]) -> list[tuple]:
    """Rows with FITS's missing values: NaN for a float, the integer null, empty text."""
    missing = [{"float": np.nan, "int": FITS_INT_NULL}.get(c.kind, "") for c in columns]
    return [tuple(m if v is None else v for v, m in zip(row, missing, strict=True)) for row in batch]


class _Collector(io.RawIOBase):
    """A write-only file that hands out what was written so far (for a streaming Parquet writer)."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def write_parquet(columns, meta, rows) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        empty_table(columns, meta).write(tmp, format="parquet", overwrite=True)
        schema = pq.read_schema(tmp)  # astropy's schema, with units and descriptions in its metadata
    finally:
        os.unlink(tmp)
    sink = _Collector()
    writer = pq.ParquetWriter(sink, schema)
    for batch in _batches(rows):
        arrays = [pa.array([row[j] for row in batch], type=schema.field(c.name).type) for j, c in enumerate(columns)]
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        yield sink.take()
    writer.close()
    yield sink.take()


#: The formats written from Django's row iterator.
WRITERS = {"votable": write_votable, "parquet": write_parquet}
