"""The catalogue's rows formatted by PostgreSQL, for the whole-catalogue downloads and the cone search.

Python spent about 1.4 us on each value of a 700,000-row, 34-column catalogue (Django's
converters, float repr, the csv module): 22 s for a CSV. Here the database formats the
rows itself: ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` writes the CSV body (PostgreSQL's
float output is the shortest text that reads back to the same double, as Python's repr),
and for FITS a binary COPY hands over rows of fixed width whose values are already the
bytes FITS stores (big-endian, NaN or the integer null where missing), which numpy reads
in place; a cone search's VOTable rows come back as one text each. Each statement wraps the
Django queryset's own SQL, so the filters are the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from django.db import connection
from django.db.models import F, QuerySet
from psycopg.adapt import Loader

from catalogue.columns import Column
from catalogue.models import Galaxy
from catalogue.selectors import PredictionColumns


def _inner(queryset: QuerySet[Galaxy], columns: tuple[Column, ...], predicted: PredictionColumns | None) -> tuple[str, tuple]:
    """The queryset's SELECT of every column as c0, c1, ... in (survey, objid) order, with its parameters.

    ``queryset`` carries ``predicted``'s columns already (:meth:`PredictionColumns.annotate`).
    """
    predicted_names = set(predicted.names) if predicted is not None else set()
    paths = {
        f"c{i}": F(predicted.attribute(column.name)) if column.name in predicted_names else F(column.name)
        for i, column in enumerate(columns)
    }
    rows = queryset.order_by("survey_id", "objid").values(**paths, s_order=F("survey_id"), o_order=F("objid"))
    sql, params = rows.query.sql_with_params()
    return sql, tuple(params)


def _csv_value(name: str, column: Column) -> str:
    """A column as CSV text wants it: empty (NULL) for no value, NaN and infinities included."""
    if column.name == "out_of_support":
        return f"{name}::int"
    if column.name == "support_reasons":
        return f"NULLIF((SELECT string_agg(r, '; ') FROM jsonb_array_elements_text({name}) AS r), '')"
    if column.kind == "float":
        # Whole numbers below 1e15 (printed without an exponent) keep a ".0", as Python writes them,
        # so that readers still see a float column. NaN = NaN in PostgreSQL: test it first.
        return (
            f"CASE WHEN {name} IN ('NaN', 'Infinity', '-Infinity') THEN NULL"
            f" WHEN {name} = trunc({name}) AND abs({name}) < 1e15 THEN {name}::text || '.0' ELSE {name}::text END"
        )
    if column.kind == "str":
        return f"NULLIF({name}, '')"
    return name


def _fits_value(name: str, column: Column, int_null: int) -> str:
    """A column as a FITS table stores it, in binary COPY's fixed width: big-endian float8 (NaN when
    missing, infinities kept), int8 (``int_null`` when missing), text as ``width`` UTF-8 bytes padded with NULs."""
    if column.name == "out_of_support":
        return f"COALESCE({name}::int::int8, {int_null})"
    if column.name == "support_reasons":
        text = f"(SELECT string_agg(r, '; ') FROM jsonb_array_elements_text({name}) AS r)"
    elif column.kind == "str":
        text = name
    elif column.kind == "float":
        return f"COALESCE({name}, 'NaN')::float8"
    else:
        return f"COALESCE({name}::int8, {int_null})"
    return f"substring(convert_to(COALESCE({text}, ''), 'UTF8') || '\\x{'00' * column.width}'::bytea from 1 for {column.width})"


def _statement(queryset, columns, predicted, value) -> tuple[str, tuple]:
    inner, params = _inner(queryset, columns, predicted)
    select = ", ".join(value(f"t.c{i}", c) for i, c in enumerate(columns))
    return f"SELECT {select} FROM ({inner}) AS t ORDER BY t.s_order, t.o_order", params


def copy_csv_body(
    queryset: QuerySet[Galaxy], columns: tuple[Column, ...], predicted: PredictionColumns | None
) -> Iterator[bytes]:
    """The CSV rows (no header) as PostgreSQL's COPY writes them, chunk by chunk."""
    sql, params = _statement(queryset, columns, predicted, _csv_value)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no COPY
        with raw.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
            for chunk in copy:
                yield bytes(chunk)


#: Binary COPY's file header (signature, flags, extension length) and its end-of-data marker.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER_BYTES = 19
_COPY_TRAILER = b"\xff\xff"
#: Bytes of rows gathered before numpy reads them.
BATCH_BYTES = 4 << 20


def fits_records(
    queryset: QuerySet[Galaxy],
    columns: tuple[Column, ...],
    predicted: PredictionColumns | None,
    dtype: np.dtype,
    int_null: int,
) -> Iterator[bytes]:
    """The rows as FITS binary-table records of ``dtype``, from PostgreSQL's binary COPY.

    Every value has a fixed width (see :func:`_fits_value`), so each COPY row is the same
    number of bytes: a field count, then per field its length and its big-endian value, the
    same bytes FITS stores. numpy reads the rows in place and keeps only the values.
    """
    sql, params = _statement(queryset, columns, predicted, lambda name, c: _fits_value(name, c, int_null))
    fields = [("count", ">i2")]
    for c in columns:
        fields += [(f"{c.name}__length", ">i4"), (c.name, dtype[c.name])]
    row = np.dtype(fields)
    buffer = bytearray()
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)", params) as copy:
        for chunk in copy:
            buffer += chunk  # PostgreSQL sends one message per row: numpy reads them in batches
            if len(buffer) >= BATCH_BYTES:
                yield _take_records(buffer, row, dtype)
    yield _take_records(buffer, row, dtype)
    if bytes(buffer) != _COPY_TRAILER:
        raise RuntimeError(f"binary COPY ended with {len(buffer)} unread bytes")


def _take_records(buffer: bytearray, row: np.dtype, dtype: np.dtype) -> bytes:
    """The FITS records of the whole COPY rows at the start of ``buffer``, which keeps the rest."""
    if buffer.startswith(_COPY_SIGNATURE):
        del buffer[:_COPY_HEADER_BYTES]
    whole = len(buffer) // row.itemsize * row.itemsize
    rows = np.frombuffer(bytes(buffer[:whole]), row)
    del buffer[:whole]
    out = np.empty(len(rows), dtype)
    for name in dtype.names:
        out[name] = rows[name]
    return out.tobytes()


def _xml_cell(name: str, column: Column, xml_safe: bool = False) -> str:
    """A column as the text of a VOTable <TD>: empty where there is no value (NULL, NaN, infinities).
    ``xml_safe``: its text cannot hold ``&``, ``<`` or ``>`` and is written as it is."""
    if column.kind == "float":
        text = f"CASE WHEN {name} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {name}::text END"
    elif column.kind == "str" and not xml_safe:
        text = f"replace(replace(replace({name}, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
    else:
        text = f"{name}::text"
    return f"COALESCE({text}, '')"


def tabledata_select(
    queryset: QuerySet[Galaxy],
    columns: tuple[Column, ...],
    order: str,
    expressions: dict | None = None,
    *,
    keep: tuple[str, ...] = (),
) -> tuple[str, tuple]:
    """The SELECT that :func:`tabledata` formats: every column as c0, c1, ..., ``order`` as o_order and
    the galaxy fields ``keep`` under their own names (for a condition :func:`tabledata` adds), unordered
    and unlimited; with its parameters. Compiling it costs the ORM about 20 ms for a cone search's 22
    columns, so a caller may keep it and use it again.

    ``expressions`` gives the SQL of columns that are not the galaxy's own fields (its survey's name,
    a prediction, a link).
    """
    expressions = expressions or {}
    paths = {f"c{i}": expressions.get(c.name, F(c.name)) for i, c in enumerate(columns)}
    rows = queryset.order_by().values(*keep, **paths, o_order=F(order))
    sql, params = rows.query.sql_with_params()
    return sql, tuple(params)


class _TextAsBytes(Loader):
    """PostgreSQL's text as the UTF-8 bytes it sent, undecoded."""

    def load(self, data) -> bytes:
        return bytes(data)


def tabledata(
    select: tuple[str, tuple],
    columns: tuple[Column, ...],
    limit: int,
    where: tuple[str, list] = ("true", []),
    xml_safe: frozenset[str] = frozenset(),
) -> tuple[int, bytes]:
    """At most ``limit`` rows of ``select`` (:func:`tabledata_select`) for which ``where`` (SQL over its
    columns as ``t``, and its parameters) holds, by o_order, as VOTable TABLEDATA <TR> elements (UTF-8), and
    how many rows there were up to ``limit + 1`` (more than ``limit``: the caller reports an overflow).
    ``xml_safe`` names the columns whose text needs no escaping (numbers, links on a validated host).

    PostgreSQL formats the cells, 60,000 of them for a 0.5 degree cone, each row's text one value;
    Python only joins the rows' bytes. The condition goes on the outer SELECT; PostgreSQL pushes it
    down into ``select``'s scan, so its indexes serve it.
    """
    inner, params = select
    condition, condition_params = where
    cells = [_xml_cell(f"t.c{i}", c, c.name in xml_safe) for i, c in enumerate(columns)]
    # concat_ws() takes at most 100 arguments: the cells go in groups, each a concat_ws() of its own.
    groups = [f"concat_ws('</TD><TD>', {', '.join(cells[i : i + 90])})" for i in range(0, len(cells), 90)]
    text = groups[0] if len(groups) == 1 else f"concat_ws('</TD><TD>', {', '.join(groups)})"
    # Each row's text is made below a fence (OFFSET 0) and sorted and limited above it: in the same SELECT
    # as the LIMIT, PostgreSQL postpones costly expressions past the sort, and its leader alone formatted
    # every cell (14 of a 0.5 degree cone's 33 ms); below it, each parallel worker formats its own rows.
    # The rows come back one by one (string_agg sorted them once more: 4 ms of 28).
    tr = f"concat('<TR><TD>', {text}, E'</TD></TR>\\n')"
    row = f"SELECT t.o_order AS o, {tr} AS tr FROM ({inner}) AS t WHERE {condition} OFFSET 0"
    sql = f"SELECT tr FROM ({row}) AS t ORDER BY o LIMIT {int(limit) + 1}"
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: its text read as bytes, to be sent as they are
        raw.adapters.register_loader("text", _TextAsBytes)
        cursor.execute(sql, (*params, *condition_params))
        rows = [tr for (tr,) in cursor.fetchall()]
    return len(rows), b"".join(rows[:limit])
