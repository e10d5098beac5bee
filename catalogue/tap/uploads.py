"""TAP UPLOAD (TAP 1.1 section 3.5, DALI): a user's own table, read by one query as TAP_UPLOAD.<name>.

``UPLOAD=name,param:part`` names a part of the same multipart request holding a VOTable
(a CSV with a header line, or a FITS binary table, are read too); ``UPLOAD=name,https://...``
a public URL the service fetches (TAPRegExt's upload-inline and upload-http). The table is checked
against the service's limits (``TAP_UPLOAD_MAX_BYTES``, ``TAP_UPLOAD_MAX_ROWS``), typed from
its FIELDs, and loaded, inside the query's own transaction, into a temporary table that is
gone when the transaction ends: it never outlives its query or job. Where the table has
positions (columns named ra and dec, or with the UCDs pos.eq.ra and pos.eq.dec, in degrees)
it gets the catalogue's sky index too: the unit vector and HEALPix index of each row, under
names ADQL cannot write, and, for a crossmatch with the catalogue, each row's galaxies within
the radius, found as the table loads by one range join of the nine HEALPix pixels round each
row with the catalogue's ``healpix`` index (:func:`_match`); the query then joins on the
galaxies' primary key. Those columns never appear in a result.
"""

from __future__ import annotations

import io
import ipaddress
import math
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy_healpix import neighbours
from django.conf import settings

from catalogue.tap.adql import SkyColumns, cover_order, match_column
from pipeline.sky import INDEX_ORDER, healpix_index, unit_vector
from pipeline.sky import chord2 as sky_chord2

#: ADQL's schema of uploaded tables.
SCHEMA = "tap_upload"
#: An ADQL regular identifier: what a table or column name of an upload must be.
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: The columns an upload gains for the sky index (hidden from results: :func:`is_hidden`).
SKY_COLUMNS = SkyColumns(x="_sky_x", y="_sky_y", z="_sky_z", healpix="_healpix", covers=True, id=None)
_HIDDEN = re.compile(r"^_(sky_[xyz]|healpix|row|match\d+)$")
#: The table a crossmatch's matches are found in: every public galaxy (the catalogue table's rows too).
GALAXIES = "morphomass.galaxies"
#: numpy dtype -> PostgreSQL type, so a result gives back the VOTable types uploaded (short, int, long, float, ...).
_PG_TYPES = {
    "f4": "real",
    "f8": "double precision",
    "i1": "smallint",
    "u1": "smallint",
    "i2": "smallint",
    "u2": "integer",
    "i4": "integer",
    "u4": "bigint",
    "i8": "bigint",
    "u8": "bigint",
    "b1": "boolean",
}
_TEXT_KINDS = "USO"


class UploadError(ValueError):
    """An upload this service cannot take; the message names the table and what is wrong."""


@dataclass
class Upload:
    """One uploaded table, read and typed, ready to load."""

    name: str  # lower case, as ADQL reaches it (TAP_UPLOAD.<name>)
    table: Table
    columns: list[tuple[str, str]] = field(default_factory=list)  # (column name in lower case, PostgreSQL type)
    units: dict[str, str] = field(default_factory=dict)
    position: tuple[str, str] | None = None  # (ra, dec) column names, as the table has them

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def sql_name(self) -> str:
        return f'pg_temp."{SCHEMA}_{self.name}"'

    @property
    def sky(self) -> SkyColumns | None:
        if self.position is None:
            return None
        return replace(SKY_COLUMNS, ra=self.position[0].lower(), dec=self.position[1].lower())


def is_hidden(column_name: str) -> bool:
    """Whether a result column is one of an upload's sky-index columns (never shown)."""
    return bool(_HIDDEN.match(column_name))


def references(value: str) -> list[tuple[str, str]]:
    """UPLOAD's ``name,param:part`` or ``name,http(s)://...`` pairs (``;`` between tables): (name in lower
    case, the part's name or the URL)."""
    found: list[tuple[str, str]] = []
    for item in (p.strip() for p in value.split(";")):
        if not item:
            continue
        name, _, ref = item.partition(",")
        name, ref = name.strip(), ref.strip()
        if not IDENTIFIER.match(name):
            raise UploadError(f"UPLOAD table name {name!r} is not an ADQL identifier (a letter, then letters, digits or _)")
        if not ref:
            raise UploadError(f"UPLOAD={item!r}: give the table as name,param:part")
        if not ref.startswith(("param:", "http://", "https://")):
            raise UploadError(
                f"UPLOAD {name!r} refers to {ref!r}: this service reads a table from a part of the request"
                " (UPLOAD=name,param:part) or from an http(s) URL"
            )
        if name.lower() in (n for n, _ in found):
            raise UploadError(f"UPLOAD names table {name!r} twice")
        found.append((name.lower(), ref.removeprefix("param:")))
    if not found:
        raise UploadError("UPLOAD is empty: give name,param:part")
    return found


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002 - urllib's signature
        raise UploadError(f"the upload's URL redirects ({code}) to {newurl}: give the final URL")


def fetch(name: str, url: str) -> bytes:
    """The table at an http(s) URL (TAPRegExt's upload-http), read up to the size limit.

    Hosts on private, loopback or link-local addresses are refused unless
    ``TAP_UPLOAD_FETCH_PRIVATE`` allows them (the service must not become a way into the network
    it runs in), redirects are not followed, and what a failed fetch returned is never echoed.
    """
    parsed = urllib.parse.urlparse(url)
    if not parsed.hostname:
        raise UploadError(f"upload {name!r}: {url!r} names no host")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or None)}
    except OSError:
        raise UploadError(f"upload {name!r}: the host {parsed.hostname!r} is not known") from None
    inside = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
    if inside and not settings.TAP_UPLOAD_FETCH_PRIVATE:
        raise UploadError(f"upload {name!r}: {parsed.hostname!r} is a private address; this service fetches public URLs only")
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(url, timeout=settings.TAP_UPLOAD_FETCH_TIMEOUT_S) as response:
            data = response.read(settings.TAP_UPLOAD_MAX_BYTES + 1)
    except UploadError:
        raise
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or exc.__class__.__name__
        raise UploadError(f"upload {name!r}: fetching {url} failed ({reason})") from None
    if len(data) > settings.TAP_UPLOAD_MAX_BYTES:  # read one byte past the limit, so not its whole size
        raise UploadError(
            f"upload {name!r} at {url} is over {settings.TAP_UPLOAD_MAX_BYTES:,} bytes, the most this service takes"
            " per table (TAP_UPLOAD_MAX_BYTES)"
        )
    return data


def check_size(name: str, size: int) -> None:
    """Refuse an upload over ``TAP_UPLOAD_MAX_BYTES`` before it is read."""
    if size > settings.TAP_UPLOAD_MAX_BYTES:
        raise UploadError(
            f"upload {name!r} is {size:,} bytes: this service takes at most {settings.TAP_UPLOAD_MAX_BYTES:,}"
            " bytes per table (TAP_UPLOAD_MAX_BYTES)"
        )


def read(name: str, data: bytes) -> Upload:
    """The table ``data`` holds (VOTable, CSV or FITS), checked against the limits and typed."""
    check_size(name, len(data))
    table = _parse(name, data)
    if len(table) > settings.TAP_UPLOAD_MAX_ROWS:
        raise UploadError(
            f"upload {name!r} has {len(table):,} rows: this service takes at most {settings.TAP_UPLOAD_MAX_ROWS:,}"
            " rows per table (TAP_UPLOAD_MAX_ROWS)"
        )
    upload = Upload(name=name, table=table)
    seen: set[str] = set()
    for column in table.itercols():
        column_name = column.name
        if not IDENTIFIER.match(column_name):
            raise UploadError(f"upload {name!r}: column name {column_name!r} is not an ADQL identifier; rename it")
        if column_name.lower() in seen:
            raise UploadError(f"upload {name!r}: two columns are named {column_name!r} (ADQL names ignore case)")
        seen.add(column_name.lower())
        if column.ndim > 1:
            raise UploadError(f"upload {name!r}: column {column_name!r} holds arrays; upload scalar columns only")
        upload.columns.append((column_name.lower(), _pg_type(name, column)))
        if column.unit is not None:
            upload.units[column_name.lower()] = column.unit.to_string("vounit")
    upload.position = _position(table)
    return upload


def _pg_type(name: str, column) -> str:
    """The PostgreSQL type of an uploaded column (an ISO 8601 time, xtype timestamp, as a timestamp)."""
    if column.dtype.kind in _TEXT_KINDS:
        return "timestamp" if column.meta.get("xtype") == "timestamp" else "text"
    found = _PG_TYPES.get(f"{column.dtype.kind}{column.dtype.itemsize}")
    if found is None:
        raise UploadError(f"upload {name!r}: column {column.name!r} has a type this service cannot store ({column.dtype})")
    return found


def _parse(name: str, data: bytes) -> Table:
    head = data.lstrip()[:80]
    try:
        if head.startswith(b"<"):
            from astropy.io.votable import parse_single_table

            return parse_single_table(io.BytesIO(data), verify="ignore").to_table(use_names_over_ids=True)
        if head.startswith(b"SIMPLE"):
            return Table.read(io.BytesIO(data), format="fits")
        return Table.read(data.decode("utf-8"), format="ascii.csv")
    except Exception as exc:  # noqa: BLE001 - any reader's failure is the user's file: said with the reader's words
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UploadError(f"upload {name!r} is not a VOTable, CSV or FITS table this service can read: {first}") from None


def _position(table: Table) -> tuple[str, str] | None:
    """The (ra, dec) columns: by UCD (the main ones first), else by name; None where there are none."""

    def by_ucd(word: str) -> str | None:
        found = [c.name for c in table.itercols() if word in str(c.meta.get("ucd", "")).lower().split(";")]
        main = [n for n in found if "meta.main" in str(table[n].meta.get("ucd", "")).lower()]
        return (main or found or [None])[0]

    names = {c.name.lower(): c.name for c in table.itercols()}
    ra = by_ucd("pos.eq.ra") or names.get("ra")
    dec = by_ucd("pos.eq.dec") or names.get("dec")
    if ra is None or dec is None:
        return None
    for column in (ra, dec):
        if table[column].dtype.kind not in "fiu" or (
            table[column].unit is not None and not table[column].unit.is_equivalent(u.deg)
        ):
            return None
    return ra, dec


def _degrees(table: Table, name: str) -> np.ndarray:
    column = table[name]
    values = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
    if column.unit is not None:
        values = (values * column.unit).to_value(u.deg)
    return values


def _derived(upload: Upload) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The hidden sky columns (unit vector, HEALPix index) and which rows have a position (the others' are NULL)."""
    if upload.position is None:
        return {}, np.ones(len(upload.table), dtype=bool)
    ra = _degrees(upload.table, upload.position[0])
    dec = _degrees(upload.table, upload.position[1])
    valid = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    x, y, z = unit_vector(np.where(valid, ra, 0.0), np.where(valid, dec, 0.0))
    fine = healpix_index(np.where(valid, ra, 0.0) % 360.0, np.where(valid, dec, 0.0))
    return {SKY_COLUMNS.x: x, SKY_COLUMNS.y: y, SKY_COLUMNS.z: z, SKY_COLUMNS.healpix: fine}, valid


def _neighbourhoods(fine: np.ndarray, valid: np.ndarray, radius_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, low, high): the fine-order index ranges of the nine pixels round each row, at the order
    :func:`~catalogue.tap.adql.cover_order` picks for the radius (adjacent ranges of a row merged)."""
    order = cover_order(radius_deg)
    shift = 2 * (INDEX_ORDER - order)
    rows = np.flatnonzero(valid)
    own = fine[rows] >> shift
    around = np.vstack([own[None, :], neighbours(own, 2**order, order="nested")])  # (9, n); -1 where none
    row = np.broadcast_to(rows, around.shape).ravel()
    pixel = around.ravel()
    keep = pixel >= 0
    row, pixel = row[keep], pixel[keep]
    order_of = np.lexsort((pixel, row))
    row, pixel = row[order_of], pixel[order_of]
    distinct = np.ones(len(pixel), dtype=bool)
    distinct[1:] = (row[1:] != row[:-1]) | (pixel[1:] != pixel[:-1])
    row, pixel = row[distinct], pixel[distinct]
    starts = np.ones(len(pixel), dtype=bool)  # a range starts where the row changes or the pixels are not adjacent
    starts[1:] = (row[1:] != row[:-1]) | (pixel[1:] != pixel[:-1] + 1)
    first = np.flatnonzero(starts)
    last = np.append(first[1:], len(pixel)) - 1
    return row[first], pixel[first] << shift, ((pixel[last] + 1) << shift) - 1


def _match(cursor, upload: Upload, fine: np.ndarray, valid: np.ndarray, radius_deg: float, find: bool = True) -> None:
    """Fill the upload's match column for ``radius_deg``: each row's public galaxies within the radius.

    One range join of the rows' neighbourhoods with the galaxies' ``healpix`` index, then the
    exact test (the chord between unit vectors), the galaxy ids gathered per row.
    """
    column = match_column(radius_deg)
    cursor.execute(f"ALTER TABLE {upload.sql_name} ADD COLUMN \"{column}\" bigint[] NOT NULL DEFAULT '{{}}'")
    if not find:
        return
    cover = f'pg_temp."{SCHEMA}_{upload.name}_cover"'
    cursor.execute(f"CREATE TEMP TABLE {cover} (_row bigint, lo bigint, hi bigint) ON COMMIT DROP")
    with cursor.copy(f"COPY {cover} (_row, lo, hi) FROM STDIN") as copy:
        for item in zip(*(a.tolist() for a in _neighbourhoods(fine, valid, radius_deg)), strict=True):
            copy.write_row(item)
    cursor.execute(f"ANALYZE {cover}")
    chord2 = sky_chord2(radius_deg)
    s = SKY_COLUMNS
    distance = " + ".join(f"(g.sky_{a} - u.{getattr(s, a)}) * (g.sky_{a} - u.{getattr(s, a)})" for a in "xyz")
    cursor.execute(
        f'UPDATE {upload.sql_name} AS t SET "{column}" = m.ids FROM ('
        f" SELECT c._row, array_agg(g.galaxy_id) AS ids FROM {cover} AS c"
        f" JOIN {upload.sql_name} AS u ON u._row = c._row"
        f" JOIN {GALAXIES} AS g ON g.healpix BETWEEN c.lo AND c.hi"
        f" WHERE {distance} <= {chord2!r} GROUP BY c._row"
        f") AS m WHERE t._row = m._row"
    )
    cursor.execute(f"DROP TABLE {cover}")


def load(cursor, uploads: list[Upload], covers: dict[str, set[float]], reader_role: str | None, matches: bool = True) -> None:
    """Create and fill each upload's temporary table in the current transaction (before it turns read-only),
    with each crossmatch radius's matches (``covers``: table -> radii in degrees; the columns left empty
    without ``matches``, where only the result's columns are asked for)."""
    for upload in uploads:
        derived, valid = _derived(upload)
        columns = [*upload.columns, ("_row", "bigint")]
        columns += [(n, "bigint" if n == SKY_COLUMNS.healpix else "double precision") for n in derived]
        definition = ", ".join(f'"{n}" {t}' for n, t in columns)
        cursor.execute(f"CREATE TEMP TABLE {upload.sql_name} ({definition}) ON COMMIT DROP")
        names = ", ".join(f'"{n}"' for n, _ in columns)
        values = [_cells(upload.table[c.name]) for c in upload.table.itercols()]
        values.append(range(len(upload.table)))
        values += [[v if ok else None for v, ok in zip(a.tolist(), valid.tolist(), strict=True)] for a in derived.values()]
        with cursor.copy(f"COPY {upload.sql_name} ({names}) FROM STDIN") as copy:
            for row in zip(*values, strict=True):
                copy.write_row(row)
        cursor.execute(f"CREATE UNIQUE INDEX ON {upload.sql_name} (_row)")
        if derived:
            cursor.execute(f"CREATE INDEX ON {upload.sql_name} ({SKY_COLUMNS.healpix})")
        cursor.execute(f"ANALYZE {upload.sql_name}")
        for radius in sorted(covers.get(upload.qualified, ())):
            if derived:
                _match(cursor, upload, derived[SKY_COLUMNS.healpix], valid, radius, matches)
        if reader_role:
            cursor.execute(f"GRANT SELECT ON {upload.sql_name} TO {reader_role}")


def _cells(column) -> list:
    """A column's values as Python values, masked ones (and NaN) as None: NULL."""
    mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else np.zeros(len(column), dtype=bool)
    pairs = zip(np.asarray(column).tolist(), mask.tolist(), strict=True)
    kind = column.dtype.kind
    if kind == "f":
        return [None if m or not math.isfinite(v) else v for v, m in pairs]
    if kind in "SUO":
        return [None if m else (v.decode() if isinstance(v, bytes) else str(v)) for v, m in pairs]
    return [None if m else v for v, m in pairs]


def tables(uploads: list[Upload]) -> tuple[dict[str, SkyColumns | bool], dict[str, str], dict[str, str]]:
    """What the ADQL translator needs of the uploads: tables (with sky columns), SQL names, column units."""
    found = {u_.qualified: (u_.sky or False) for u_ in uploads}
    names = {u_.qualified: u_.sql_name for u_ in uploads}
    units: dict[str, str] = {}
    for u_ in uploads:
        units.update(u_.units)
    return found, names, units
