"""The formats astronomers load, written from rows as a stream of bytes.

The downloads, ``export_catalogue``, the cone search and TAP write through these: one writer
per format, fed rows in batches, so a 700,000-row table is never built in memory.

* ``csv``: plain CSV (a header line, then rows; empty fields for missing values), which
  ``Table.read("x.csv")`` and pandas read as they are; no units (use ECSV for those);
* ``ecsv``: astropy's ECSV: the same comma-separated body under a YAML header with every
  column's unit and description and the metadata;
* ``fits``: a FITS binary table (TUNITn for every unit, the metadata in the header),
  missing floats as NaN, integers as their null;
* ``votable``: VOTable 1.4 TABLEDATA with units, descriptions and the metadata as INFO;
* ``parquet``: Apache Parquet row groups with astropy's column metadata (units, descriptions).

A small table already in memory (an experiments table) is written by astropy itself
(:func:`table_bytes`).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from math import isfinite
from xml.sax.saxutils import escape

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from catalogue.columns import Column

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
#: astropy's writer of each format, for :func:`table_bytes`.
ASTROPY_FORMATS = {"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fits": "fits", "votable": "votable", "parquet": "parquet"}


def table_bytes(table: Table, fmt: str) -> bytes:
    """A table in memory as a file of ``fmt``, written by astropy (units and descriptions kept where the format has them).

    Raises
    ------
    ValueError
        for an unknown format.
    """
    if fmt not in ASTROPY_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":  # astropy's Parquet writer wants a file name
        fd, tmp = tempfile.mkstemp(suffix=".parquet")
        os.close(fd)
        try:
            table.write(tmp, format="parquet", overwrite=True)
            with open(tmp, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(tmp)
    if ASTROPY_FORMATS[fmt].startswith("ascii"):
        text = io.StringIO()
        table.write(text, format=ASTROPY_FORMATS[fmt])
        return text.getvalue().encode()
    buffer = io.BytesIO()
    table.write(buffer, format=ASTROPY_FORMATS[fmt])
    return buffer.getvalue()


def moc_fits(moc) -> bytes:
    """An IVOA MOC (mocpy) as the bytes of its FITS serialisation."""
    buffer = io.BytesIO()
    moc.serialize(format="fits").writeto(buffer)
    return buffer.getvalue()


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


def batches(rows: Iterable[tuple]) -> Iterator[list[tuple]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == ROWS_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def csv_body(rows: Iterable[tuple]) -> Iterator[bytes]:
    for batch in batches(rows):
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
    for batch in batches(rows):
        yield tabledata_rows(batch)
    yield footer


def fits_dtype(columns: tuple[Column, ...]) -> np.dtype:
    codes = {"float": ">f8", "int": ">i8"}
    return np.dtype([(c.name, codes.get(c.kind, f"S{c.width}")) for c in columns])


def write_fits(columns, meta, records: Iterable[bytes], count: int) -> Iterator[bytes]:
    """A FITS binary table of ``count`` rows from chunks of its records' bytes (whole records)."""
    dtype = fits_dtype(columns)
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


def fits_records(batch: list[tuple], columns: tuple[Column, ...]) -> bytes:
    """Rows holding FITS values (no None) as the bytes of FITS binary-table records."""
    records = np.empty(len(batch), fits_dtype(columns))
    for c, values in zip(columns, zip(*batch, strict=True), strict=True):
        records[c.name] = [v.encode()[: c.width] for v in values] if c.kind == "str" else values
    return records.tobytes()


def fits_values(batch: list[tuple], columns: tuple[Column, ...]) -> list[tuple]:
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
    for batch in batches(rows):
        arrays = [pa.array([row[j] for row in batch], type=schema.field(c.name).type) for j, c in enumerate(columns)]
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        yield sink.take()
    writer.close()
    yield sink.take()


#: The formats written from Django's row iterator.
WRITERS = {"votable": write_votable, "parquet": write_parquet}
