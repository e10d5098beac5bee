"""Write ingested catalogue rows to the Galaxy table, column-wise and in bulk.

Rows are built as columns (numpy), never as model instances: at 10^5 - 10^6 galaxies the
ORM's per-object cost dominates everything else. On PostgreSQL the rows are COPYed into a
temporary table and upserted with one INSERT ... ON CONFLICT; elsewhere (the SQLite demo)
``bulk_create`` with update_conflicts does the same job.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from django.db import connection
from psycopg.types.json import Jsonb

from catalogue.models import Galaxy, GalaxyStatus
from pipeline.bundles.sample import ASSUMED_MAGERR_G
from pipeline.sky import unit_vector

FLOAT_FIELDS = ("ra", "dec", "z", "d25_arcmin", *(f"{p}_{b}" for b in "ugriz" for p in ("mag", "magerr")))
BATCH_SIZE = 5000


def _nullable(values: np.ndarray) -> list:
    """Floats with NaN -> None, as a list ready for the database driver."""
    out = np.asarray(values, dtype=object)
    out[~np.isfinite(np.asarray(values, dtype=float))] = None
    return out.tolist()


def galaxy_columns(survey_id: int, rows, derived, outside, splits) -> dict[str, list]:
    """Every Galaxy column (except id) for the parsed rows.

    Rejected rows keep values that would break a constraint (|dec| > 90, z < 0, M/L or its
    error <= 0) in ``extra['rejected_values']`` instead of in the constrained columns.
    """
    n = len(rows)
    values = {name: rows.values[name].copy() for name in FLOAT_FIELDS}
    ml, ml_err = derived.ml_g.copy(), derived.ml_g_err.copy()
    rejected = rows.rejected
    with np.errstate(invalid="ignore"):
        offending = {
            "dec": rejected & (np.abs(values["dec"]) > 90),
            "z": rejected & (values["z"] < 0),
            "ml_g": ml <= 0,
            "ml_g_err": ml_err <= 0,
        }
    extras = [dict(e) for e in rows.extra]
    for j in np.flatnonzero(derived.assumed_magerr_g):
        extras[j]["assumed"] = {"magerr_g": ASSUMED_MAGERR_G}
    for key, mask in offending.items():
        column = values[key] if key in values else (ml if key == "ml_g" else ml_err)
        for j in np.flatnonzero(mask):
            extras[j].setdefault("rejected_values", {})[key] = float(column[j])
        column[mask] = np.nan
    excluded = np.array([bool(o) for o in outside], dtype=bool)
    status = np.where(rejected, GalaxyStatus.REJECTED, np.where(excluded, GalaxyStatus.EXCLUDED, GalaxyStatus.OK))
    reason = [("; ".join(rows.reasons[j]) if rejected[j] else "; ".join(m for _, m in outside[j]))[:300] for j in range(n)]
    # A galaxy is indexed for cone search only where its stored position is a real one.
    with np.errstate(invalid="ignore"):
        on_sky = (values["ra"] >= 0) & (values["ra"] < 360) & (np.abs(values["dec"]) <= 90)
    healpix = np.asarray(derived.healpix, dtype=object)
    healpix[~on_sky] = None
    vectors = unit_vector(values["ra"], values["dec"])
    sky = {name: np.where(on_sky, v, np.nan) for name, v in zip(("sky_x", "sky_y", "sky_z"), vectors, strict=True)}
    columns = {
        "survey_id": [survey_id] * n,
        "objid": rows.objid.tolist(),
        **{name: _nullable(values[name]) for name in FLOAT_FIELDS},
        "healpix": healpix.tolist(),
        **{name: _nullable(v) for name, v in sky.items()},
        "lum_dist_mpc": _nullable(derived.lum_dist_mpc),
        "lum_g": _nullable(derived.lum_g),
        "ml_g": _nullable(ml),
        "ml_g_err": _nullable(ml_err),
        "ml_source": [str(s) for s in derived.ml_source],
        "chi2_r": _nullable(derived.chi2_r),
        "split": [str(s) for s in splits],
        "status": [str(s) for s in status],
        "status_reason": reason,
        "extra": extras,
    }
    # The morphology class is the predict stage's, not the catalogue's: a re-ingest keeps it.
    expected = {f.attname for f in Galaxy._meta.concrete_fields} - {"id", "morphology"}
    if set(columns) != expected:
        raise RuntimeError(f"galaxy columns out of step with the model: {sorted(set(columns) ^ expected)}")
    return columns


def upsert_galaxies(columns: dict[str, list], notify: Callable[[str, int, int], None] | None = None) -> None:
    """Insert or update (keyed on survey + objid) every row of ``columns``.

    New rows go in in sky order (by HEALPix index, unplaced ones last), so their ids do too: a
    cone's galaxies then share heap pages, and their predictions and preprocessing rows neighbour
    each other in the (galaxy, ...) indexes. A 0.5 deg cone search at 700,000 galaxies read 1,488
    heap pages in file order, 43 in sky order, and its statement took 33 ms instead of 41.
    """
    n = len(columns["objid"])
    order = sorted(range(n), key=lambda i: (columns["healpix"][i] is None, columns["healpix"][i] or 0))
    columns = {name: [values[i] for i in order] for name, values in columns.items()}
    if connection.vendor == "postgresql":
        _upsert_copy(columns, n, notify)
    else:
        _upsert_orm(columns, n, notify)


_EMPTY_JSON = Jsonb({})


def _pg_type(column: str) -> str:
    """PostgreSQL type of a Galaxy column, for binary COPY."""
    field = Galaxy._meta.get_field(column[:-3] if column.endswith("_id") else column)
    internal = field.get_internal_type()
    return {
        "BigIntegerField": "int8",
        "ForeignKey": "int8",
        "FloatField": "float8",
        "JSONField": "jsonb",
    }.get(internal, "text")


def _upsert_copy(columns: dict[str, list], n: int, notify) -> None:
    """COPY the rows in: straight into the table for a new survey, else through a temp table + upsert."""
    table = Galaxy._meta.db_table
    names = list(columns)
    quoted = ", ".join(connection.ops.quote_name(c) for c in names)
    extra = [_EMPTY_JSON if not e else Jsonb(e) for e in columns["extra"]]
    data = [columns[c] if c != "extra" else extra for c in names]
    fresh = not Galaxy.objects.filter(survey_id=columns["survey_id"][0]).exists() if n else True
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        # Ingest is idempotent, so a crash right after commit loses nothing that a re-run
        # cannot redo; skip waiting for the WAL flush.
        raw.execute("SET LOCAL synchronous_commit = off")
        target = table
        if not fresh:
            raw.execute(f"CREATE TEMP TABLE galaxy_ingest (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            raw.execute("ALTER TABLE galaxy_ingest DROP COLUMN id")
            target = "galaxy_ingest"
        with raw.copy(f"COPY {target} ({quoted}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_pg_type(c) for c in names])
            for i, row in enumerate(zip(*data, strict=True)):
                copy.write_row(row)
                if notify and (i + 1) % BATCH_SIZE == 0:
                    notify("galaxies", i + 1, n)
        if not fresh:
            updates = ", ".join(
                f"{connection.ops.quote_name(c)} = EXCLUDED.{connection.ops.quote_name(c)}"
                for c in names
                if c not in ("survey_id", "objid")
            )
            raw.execute(
                f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM galaxy_ingest "
                f"ON CONFLICT (survey_id, objid) DO UPDATE SET {updates}"
            )
            raw.execute("DROP TABLE galaxy_ingest")
    if notify:
        notify("galaxies", n, n)


def _upsert_orm(columns: dict[str, list], n: int, notify) -> None:
    names = list(columns)
    update_fields = [f.name for f in Galaxy._meta.concrete_fields if f.name not in {"id", "survey", "objid", "morphology"}]
    for start in range(0, n, BATCH_SIZE):
        batch = [Galaxy(**{name: columns[name][i] for name in names}) for i in range(start, min(n, start + BATCH_SIZE))]
        Galaxy.objects.bulk_create(batch, update_conflicts=True, unique_fields=["survey", "objid"], update_fields=update_fields)
        if notify:
            notify("galaxies", min(n, start + BATCH_SIZE), n)
