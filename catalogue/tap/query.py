"""Running a translated ADQL query read-only, and writing its rows as VOTable, CSV or FITS.

Every query runs in a transaction that is read-only, has a statement timeout, searches only
the TAP schemas and, where the role exists, runs as ``morphomass_tap`` (SELECT on the TAP
tables and nothing else); the transaction is always rolled back. Results stop at MAXREC
rows: one row more is asked for, so that an overflow is known and told
(``QUERY_STATUS=OVERFLOW``, after the table, where DALI puts it).

VOTable rows are formatted by PostgreSQL (``concat`` of ``<TD>`` cells) and streamed from
a server-side cursor, so a result of 700,000 rows never sits in memory; CSV comes from
``COPY``; FITS is written by astropy from the fetched rows.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from django.db import DatabaseError, connection, transaction

from catalogue.services import writers
from catalogue.tap import datalink, schema, uploads
from catalogue.tap.adql import AdqlError, translate

#: Output formats: FORMAT / RESPONSEFORMAT value -> format name; format name -> (content type, file suffix).
FORMATS = {
    "votable": "votable",
    "application/x-votable+xml": "votable",
    "text/xml": "votable",
    "votable/td": "votable",
    "application/x-votable+xml;serialization=tabledata": "votable",
    "csv": "csv",
    "text/csv": "csv",
    "text/csv;header=present": "csv",
    "fits": "fits",
    "application/fits": "fits",
}
CONTENT_TYPES = {
    "votable": ("application/x-votable+xml", "xml"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "fits": ("application/fits", "fits"),
}
#: PostgreSQL type OID -> VOTable datatype (anything else is written as text).
OID_TYPES = {701: "double", 1700: "double", 700: "float", 20: "long", 23: "int", 21: "short", 16: "boolean"}
#: PostgreSQL timestamps: written as ISO 8601 text (VOTable char, xtype timestamp).
TIMESTAMP_OIDS = {1114, 1184}
FETCH_ROWS = 5000
#: XML 1.0 forbids these characters: text cells drop them (as PostgreSQL E'' escapes).
_CONTROL_SQL = "".join(f"\\x{c:02x}" for c in range(1, 32) if chr(c) not in "\t\n\r")


class QueryError(ValueError):
    """The database refused or failed the query; the message is PostgreSQL's."""


def output_format(value: str | None) -> str:
    """The format a FORMAT or RESPONSEFORMAT value names (votable when none)."""
    if not value:
        return "votable"
    key = "".join(value.lower().split())
    if key not in FORMATS:
        raise AdqlError(f"FORMAT={value!r} is not served: votable (default), csv or fits")
    return FORMATS[key]


@dataclass
class ResultColumn:
    """A column of a result: its name and type, and its unit, UCD and description where it is a table's column."""

    name: str
    datatype: str
    unit: str | None = None
    ucd: str | None = None
    description: str = ""
    position: int = 0  # its place among the query's own columns (an upload's sky columns are left out)
    xtype: str | None = None

    @property
    def arraysize(self) -> str | None:
        return "*" if self.datatype == "char" else None


@dataclass
class Prepared:
    """A query that parsed, translated and planned: what runs, and what its result will hold."""

    adql: str
    sql: str
    maxrec: int
    columns: list[ResultColumn] = field(default_factory=list)
    width: int = 0  # the query's own columns, hidden ones included
    uploads: list[uploads.Upload] = field(default_factory=list)
    covers: dict[str, set[int]] = field(default_factory=dict)
    #: The service's address: a VOTable result with a galaxy_id column ends with the DataLink
    #: service descriptor pointing at it (none where it is empty).
    base: str = ""
    #: What writing the result found: the rows written (None where the format does not count
    #: them), whether MAXREC cut it, and the error that ended it while rows streamed.
    rows: int | None = None
    overflow: bool = False
    error: str | None = None


def _guard(cursor, timeout_s: float, prepared: Prepared | None = None, matches: bool = True) -> None:
    """Make the current transaction read-only, bounded in time, and (where possible) run as the reader role;
    a query's uploaded tables are loaded first, as temporary tables of this transaction (their crossmatches
    found only where ``matches``: describing a result needs the columns, not the rows)."""
    cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")  # the uploads' loading included
    reader = _reader_role(cursor)
    if prepared is not None and prepared.uploads:
        uploads.load(cursor, prepared.uploads, prepared.covers, reader, matches)
    cursor.execute("SET TRANSACTION READ ONLY")
    cursor.execute(f"SET LOCAL search_path = {schema.SCHEMA}, {schema.TAP_SCHEMA}")
    cursor.execute("SET LOCAL standard_conforming_strings = on")  # ADQL's '...' literals: backslashes are text
    if reader:
        cursor.execute(f"SET LOCAL ROLE {reader}")


def _reader_role(cursor) -> str | None:
    """The reader role, where it exists and this connection may become it."""
    cursor.execute("SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s", [schema.READER_ROLE])
    member = cursor.fetchone()
    return schema.READER_ROLE if member and member[0] else None


def _describe(table_names: list[str], uploaded: list[uploads.Upload]) -> dict[str, tuple[str | None, str | None, str]]:
    """Column name -> (unit, UCD, description) over the tables a query reads, the first table's first."""
    found: dict[str, tuple[str | None, str | None, str]] = {}
    by_upload = {u.qualified: u for u in uploaded}
    for name in table_names:
        if name in by_upload:
            for column in by_upload[name].table.itercols():
                unit = by_upload[name].units.get(column.name.lower())
                found.setdefault(column.name.lower(), (unit, column.meta.get("ucd"), column.description or ""))
            continue
        table = schema.BY_NAME.get(name)
        if table is not None:
            for column_name in table.columns:
                column = table.column(column_name)
                found.setdefault(column_name, (column.unit, column.ucd or None, column.description))
        elif name.startswith(schema.TAP_SCHEMA + "."):
            for column_name, _, what in schema.TAP_SCHEMA_TABLES[name.split(".", 1)[1]][1]:
                found.setdefault(column_name, (None, None, what))
    return found


def prepare(adql: str, maxrec: int, timeout_s: float, uploaded: list[uploads.Upload] | None = None) -> Prepared:
    """Translate ``adql`` and ask PostgreSQL for its result's columns (nothing is fetched).

    ``uploaded`` are the query's TAP_UPLOAD tables. Raises :class:`AdqlError` for a query
    this service cannot translate and :class:`QueryError` for one the database refuses (an
    unknown column, a type mismatch).
    """
    if connection.vendor != "postgresql":
        raise QueryError("TAP needs PostgreSQL: set DATABASE_URL=postgres://... (see docs/querying.md)")
    uploaded = uploaded or []
    upload_tables, sql_names, upload_units = uploads.tables(uploaded)
    translation = translate(adql, schema.tap_tables() | upload_tables, sql_names, schema.column_units() | upload_units)
    prepared = Prepared(adql=adql, sql=translation.sql, maxrec=maxrec, uploads=uploaded, covers=translation.covers)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                _guard(cursor, timeout_s, prepared, matches=False)
                cursor.execute(f"SELECT * FROM ({translation.sql}) AS tap_q LIMIT 0")
                description = cursor.description
            transaction.set_rollback(True)
    except DatabaseError as exc:
        raise QueryError(database_message(exc)) from None
    known = _describe(translation.tables, uploaded)
    prepared.width = len(description)
    for position, item in enumerate(description):
        if uploaded and uploads.is_hidden(item.name):
            continue
        unit, ucd, what = known.get(item.name, (None, None, ""))
        xtype = "timestamp" if item.type_code in TIMESTAMP_OIDS else None
        datatype = OID_TYPES.get(item.type_code, "char")
        prepared.columns.append(ResultColumn(item.name, datatype, unit, ucd, what, position, xtype))
    return prepared


def database_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else exc.__class__.__name__
    if "statement timeout" in message:
        return "the query ran past its time limit (statement timeout); narrow it or run it async with a longer duration"
    return message


def _limited(prepared: Prepared, extra: int = 1) -> tuple[str, str]:
    """The query with at most MAXREC (+ ``extra``) rows, its columns renamed c0, c1, ... (names may repeat),
    and the names of the columns a result shows."""
    names = ", ".join(f"c{i}" for i in range(prepared.width))
    shown = ", ".join(f"t.c{c.position}" for c in prepared.columns)
    return f"(SELECT * FROM ({prepared.sql}) AS tap_q LIMIT {int(prepared.maxrec) + extra}) AS t({names})", shown


def _cell(name: str, column: ResultColumn) -> str:
    if column.datatype in ("double", "float"):
        value = f"{name}::float8" if column.datatype == "double" else name
        return f"CASE WHEN {value} = 'Infinity' THEN '+Inf' WHEN {value} = '-Infinity' THEN '-Inf' ELSE {value}::text END"
    if column.datatype == "boolean":
        return f"CASE WHEN {name} THEN 'T' WHEN NOT {name} THEN 'F' END"
    if column.datatype in ("long", "int", "short"):
        return f"{name}::text"
    if column.xtype == "timestamp":
        return f"to_char({name}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    escaped = f"replace(replace(replace({name}::text, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
    return f"translate({escaped}, E'{_CONTROL_SQL}', '')"


def _frame(prepared: Prepared) -> tuple[bytes, bytes]:
    document = VOTableFile()
    resource = Resource(type="results")
    document.resources.append(resource)
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    resource.infos.append(Info(name="QUERY", value=prepared.adql.replace("\x00", "")))
    table = TableElement(document, name="result")
    resource.tables.append(table)
    linked = next((c for c in prepared.columns if c.name == datalink.ID_COLUMN), None) if prepared.base else None
    for column in prepared.columns:
        item = Field(
            document,
            name=column.name,
            ID=datalink.ID_COLUMN if column is linked else None,
            datatype=column.datatype,
            xtype=column.xtype,
            arraysize=column.arraysize,
            unit=column.unit,
            ucd=column.ucd,
        )
        item.description = column.description or None
        table.fields.append(item)
    table.create_arrays(0)
    header, footer = writers.votable_frame(document)
    if linked is not None:
        footer = datalink.with_descriptor(footer, prepared.base, datalink.ID_COLUMN)
    return _declared_units(header, prepared.columns), footer


def _declared_units(header: bytes, columns: list[ResultColumn]) -> bytes:
    """The FIELD units as TAP_SCHEMA declares them: astropy rewrites ``solMass/solLum`` as ``solMass.solLum**-1``."""
    from astropy import units as u

    text = header.decode()
    for unit in {c.unit for c in columns if c.unit}:
        written = u.Unit(unit, format="vounit", parse_strict="silent").to_string("vounit")
        if written != unit:
            text = text.replace(f'unit="{written}"', f'unit="{unit}"')
    return text.encode()


def _info_after_table(footer: bytes, name: str, value: str, content: str) -> bytes:
    """The footer with an INFO after the TABLE (where DALI puts an overflow or a late error)."""
    info = f"<INFO name={quoteattr(name)} value={quoteattr(value)}>{escape(content)}</INFO>\n".encode()
    at = footer.index(b"</TABLE>") + len(b"</TABLE>\n")
    return footer[:at] + info + footer[at:]


def votable(prepared: Prepared, timeout_s: float) -> Iterator[bytes]:
    """The result as a VOTable, streamed in pieces; an error met while rows stream ends the table with an ERROR INFO."""
    header, footer = _frame(prepared)
    limited, _ = _limited(prepared)
    parts = [f"'<TD>', {_cell(f't.c{c.position}', c)}, '</TD>'" for c in prepared.columns]
    cells = ", ".join(f"concat({', '.join(parts[i : i + 30])})" for i in range(0, len(parts), 30))
    sql = f"SELECT concat('<TR>', {cells}, E'</TR>\\n') FROM {limited}"
    yield header
    count, ending = 0, None
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                _guard(cursor, timeout_s, prepared)
            # psycopg's own server-side cursor: Django's wrapper turns its errors into Django's
            with connection.wrap_database_errors, connection.connection.cursor(name="tap_result") as rows:
                rows.itersize = FETCH_ROWS
                rows.execute(sql)
                while batch := rows.fetchmany(FETCH_ROWS):
                    take = batch[: max(0, prepared.maxrec - count)]
                    count += len(batch)
                    if take:
                        yield "".join(r[0] for r in take).encode()
            transaction.set_rollback(True)
    except DatabaseError as exc:
        ending = ("ERROR", database_message(exc))
    if ending is None and count > prepared.maxrec:
        ending = ("OVERFLOW", f"the result was cut at MAXREC={prepared.maxrec} rows")
    prepared.rows, prepared.overflow = min(count, prepared.maxrec), count > prepared.maxrec
    prepared.error = ending[1] if ending and ending[0] == "ERROR" else None
    yield _info_after_table(footer, "QUERY_STATUS", *ending) if ending else footer


def csv(prepared: Prepared, timeout_s: float) -> Iterator[bytes]:
    """The result as CSV with a header line, as PostgreSQL's COPY writes it (at most MAXREC rows)."""
    values = ", ".join(
        f"t.c{c.position}::float8 AS c{c.position}" if c.datatype == "double" else f"t.c{c.position}" for c in prepared.columns
    )
    limited, _ = _limited(prepared, extra=0)
    header = (",".join(_csv_name(c.name) for c in prepared.columns) + "\r\n").encode()
    with transaction.atomic():
        with connection.cursor() as cursor:
            _guard(cursor, timeout_s, prepared)
            yield header
            with cursor.cursor.copy(f"COPY (SELECT {values} FROM {limited}) TO STDOUT (FORMAT csv)") as copy:
                for chunk in copy:
                    yield bytes(chunk)
        transaction.set_rollback(True)


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\r\n') else name


def fetch(prepared: Prepared, timeout_s: float) -> list[tuple]:
    """The result's rows as Python values (at most MAXREC; ``prepared`` records an overflow)."""
    limited, names = _limited(prepared)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                _guard(cursor, timeout_s, prepared)
                cursor.execute(f"SELECT {names} FROM {limited}")
                rows = cursor.fetchall()
            transaction.set_rollback(True)
    except DatabaseError as exc:
        raise QueryError(database_message(exc)) from None
    prepared.rows, prepared.overflow = min(len(rows), prepared.maxrec), len(rows) > prepared.maxrec
    return rows[: prepared.maxrec]


def fits(prepared: Prepared, timeout_s: float) -> bytes:
    """The result as a FITS binary table (units on the columns; an overflow told by the QUERY_ST keyword)."""
    from astropy.table import MaskedColumn, Table

    rows = fetch(prepared, timeout_s)
    table = Table()
    used: set[str] = set()
    for i, column in enumerate(prepared.columns):
        values = [r[i] for r in rows]
        missing = np.array([v is None for v in values], dtype=bool)
        if column.datatype in ("double", "float"):
            data = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
            item = MaskedColumn(data, mask=missing) if missing.any() else data
        elif column.datatype in ("long", "int", "short"):
            item = MaskedColumn(np.array([0 if v is None else int(v) for v in values], dtype=np.int64), mask=missing)
        elif column.datatype == "boolean":
            item = MaskedColumn(np.array([bool(v) for v in values], dtype=bool), mask=missing)
        else:
            item = np.array(["" if v is None else str(v) for v in values], dtype=str)
        name = column.name if column.name not in used else f"{column.name}_{i}"
        used.add(name)
        table[name] = item
        table[name].unit = column.unit
        table[name].description = column.description
    table.meta["QUERY_ST"] = "OVERFLOW" if prepared.overflow else "OK"
    buffer = io.BytesIO()
    table.write(buffer, format="fits")
    return buffer.getvalue()


def write(prepared: Prepared, fmt: str, timeout_s: float) -> Iterator[bytes]:
    """The result in ``fmt`` as pieces of bytes."""
    if fmt == "votable":
        return votable(prepared, timeout_s)
    if fmt == "csv":
        return csv(prepared, timeout_s)
    return iter([fits(prepared, timeout_s)])
