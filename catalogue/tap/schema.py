"""The tables TAP serves, as views over the data model, and TAP_SCHEMA describing them.

Each TAP table is a view in the ``morphomass`` schema; its columns take their unit, UCD and
description from :mod:`catalogue.columns` (the one column description) and their datatype
from the view itself, so TAP_SCHEMA, VOSI ``tables`` and every result's FIELDs agree.
:func:`install` (re)creates the views, the ``tap_schema`` tables and the read-only role
``morphomass_tap`` after every ``migrate``; :func:`uninstall` drops the views before one, so
that migrations may alter the columns they read. PostgreSQL only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from catalogue.columns import GALAXY_COLUMNS, PREDICTION_COLUMNS, SERVICE_COLUMNS, TAP_COLUMNS, Column
from catalogue.selectors import applied_sets_sql, catalogue_choice_sql
from pipeline.learning.named_models import CATALOGUE_MODEL

log = logging.getLogger(__name__)

SCHEMA = "morphomass"
TAP_SCHEMA = "tap_schema"
#: The role queries run as where it could be made: SELECT on the TAP tables and nothing else.
READER_ROLE = "morphomass_tap"

_COLUMNS = {c.name: c for c in (*GALAXY_COLUMNS, *PREDICTION_COLUMNS, *SERVICE_COLUMNS, *TAP_COLUMNS)}
#: Every catalogue column is a column of TAP's galaxies (a new one in columns.py appears here too);
#: text columns read NULL where they are empty.
_GALAXY_FIELDS = [c.name for c in GALAXY_COLUMNS if c.kind != "str"]
_EMPTY_AS_NULL = [c.name for c in GALAXY_COLUMNS if c.kind == "str"]
_INDEXED = {
    "galaxy_id",
    "survey_id",
    "objid",
    "ra",
    "dec",
    "z",
    "ml_g",
    "lum_g",
    "d25_arcmin",
    "healpix",
    "model_id",
    "morphology",
    "status",
    "split",
}
_PRINCIPAL = {
    "galaxy_id",
    "survey",
    "objid",
    "ra",
    "dec",
    "z",
    "lum_g",
    "ml_g",
    "name",
    "model_set",
    "model_name",
    "ml_pred",
    "ml_lo68",
    "ml_hi68",
    "mstar_pred",
    "out_of_support",
}


@dataclass(frozen=True)
class TapTable:
    """One table of TAP: its view's SELECT, its columns in order, its description, its foreign keys."""

    name: str
    description: str
    select: str | Callable[[], str]  # a callable when the SQL comes from a selector's query, made at install
    columns: tuple[str, ...]
    keys: tuple[tuple[str, str, str], ...] = ()  # (from column, target table, target column)
    overrides: dict[str, str] = field(default_factory=dict)  # column -> description here
    sky: bool = False  # has healpix and sky_x, sky_y, sky_z: CONTAINS uses the index

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    def select_sql(self) -> str:
        """The view's SELECT."""
        return self.select() if callable(self.select) else self.select

    def column(self, name: str) -> Column:
        column = _COLUMNS[name]
        if name in self.overrides:
            return Column(column.name, column.unit, self.overrides[name], column.ucd, column.kind)
        return column


def _galaxy_select() -> str:
    fields = ", ".join(f"g.{n}" for n in _GALAXY_FIELDS)
    empty = ", ".join(f"NULLIF(g.{n}, '') AS {n}" for n in _EMPTY_AS_NULL)
    return (
        f"SELECT g.id AS galaxy_id, g.survey_id, s.name AS survey, {fields}, {empty},"
        " g.healpix, g.sky_x, g.sky_y, g.sky_z"
        " FROM catalogue_galaxy g JOIN catalogue_survey s ON s.id = g.survey_id AND s.owner_id IS NULL"  # public only
    )


_GALAXY_COLUMNS = ("galaxy_id", "survey_id", "survey", *_GALAXY_FIELDS, *_EMPTY_AS_NULL, "healpix", "sky_x", "sky_y", "sky_z")
_PREDICTED = tuple(c.name for c in PREDICTION_COLUMNS)
_REASONS = "NULLIF((SELECT string_agg(r, '; ') FROM jsonb_array_elements_text(p.support_reasons) AS r), '')"
_VALUES = ", ".join(f"p.{n}" for n in _PREDICTED if n not in ("out_of_support", "support_reasons"))


def _catalogue_select() -> str:
    """Each galaxy with the catalogue's M/L: of the set applied to its survey last
    (:func:`catalogue.selectors.applied_sets_sql`), the best-validated named model it has the inputs of
    (:func:`catalogue.selectors.catalogue_choice_sql`): the selectors' own answers, as SQL."""
    return (
        f"SELECT g.*, ms.id AS model_set_id, ms.name AS model_set, p.ml_model AS model_name, {_VALUES},"
        f" p.out_of_support::int AS out_of_support, {_REASONS} AS support_reasons"
        f" FROM {SCHEMA}.galaxies g LEFT JOIN ({applied_sets_sql()}) a ON a.survey_id = g.survey_id"
        " LEFT JOIN catalogue_modelset ms ON ms.id = a.model_set_id"
        " LEFT JOIN catalogue_preprocessed pre ON pre.galaxy_id = g.galaxy_id"
        f" LEFT JOIN LATERAL ({catalogue_choice_sql()}) p ON true"
    )


TABLES: tuple[TapTable, ...] = (
    TapTable(
        "surveys",
        "Ingested survey bundles; objids repeat across surveys, so a galaxy is known by its survey and objid.",
        "SELECT s.id AS survey_id, s.name, s.has_star_catalogue::int AS has_star_catalogue, s.h0, s.om0,"
        " (SELECT count(*) FROM catalogue_galaxy g WHERE g.survey_id = s.id) AS n_galaxies,"
        " to_char(s.created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS created FROM catalogue_survey s"
        " WHERE s.owner_id IS NULL",
        ("survey_id", "name", "has_star_catalogue", "h0", "om0", "n_galaxies", "created"),
        overrides={"name": "survey name (galaxies.survey)", "created": "when the survey was first ingested (UTC)"},
    ),
    TapTable(
        "galaxies",
        "The catalogue: one row per ingested galaxy, with its photometry, the M/L target where the survey has one, "
        "its split and its morphology class. CONTAINS(POINT(ra, dec), ...) on it uses the sky index.",
        _galaxy_select(),
        _GALAXY_COLUMNS,
        keys=(("survey_id", "surveys", "survey_id"),),
        sky=True,
    ),
    TapTable(
        "model_sets",
        "Model sets: the networks and named M/L models of one training, named <training survey>@<gbm run>.",
        "SELECT ms.id AS model_set_id, ms.name, ms.survey_id, NULLIF(ms.preset, '') AS preset,"
        " ms.is_current::int AS is_current,"
        " to_char(ms.created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS created FROM catalogue_modelset ms",
        ("model_set_id", "name", "survey_id", "preset", "is_current", "created"),
        keys=(("survey_id", "surveys", "survey_id"),),
        overrides={"name": "model set name: <training survey>@<gbm run>", "survey_id": "id of the training survey"},
    ),
    TapTable(
        "models",
        "Trained models: the CNNs, the named GBMs and the baselines.",
        "SELECT m.id AS model_id, m.name, m.kind, m.survey_id, m.model_set_id, NULLIF(m.preset, '') AS preset,"
        " to_char(m.created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS created FROM catalogue_trainedmodel m",
        ("model_id", "name", "kind", "survey_id", "model_set_id", "preset", "created"),
        keys=(("survey_id", "surveys", "survey_id"), ("model_set_id", "model_sets", "model_set_id")),
        overrides={
            "name": f"model name: a network role (cnn1..cnn4) or a named model ({CATALOGUE_MODEL}, ...)",
            "survey_id": "id of the training survey",
        },
    ),
    TapTable(
        "predictions",
        "Predicted g-band M/L of every galaxy by every model that predicted it, with calibrated intervals and M*.",
        f"SELECT p.galaxy_id, p.model_id, m.model_set_id, ms.name AS model_set, m.name AS model_name, {_VALUES},"
        f" p.out_of_support::int AS out_of_support, {_REASONS} AS support_reasons"
        " FROM catalogue_prediction p JOIN catalogue_trainedmodel m ON m.id = p.model_id"
        " LEFT JOIN catalogue_modelset ms ON ms.id = m.model_set_id"
        " JOIN catalogue_galaxy pg ON pg.id = p.galaxy_id"
        " JOIN catalogue_survey ps ON ps.id = pg.survey_id AND ps.owner_id IS NULL",
        ("galaxy_id", "model_id", "model_set_id", "model_set", "model_name", *_PREDICTED),
        keys=(
            ("galaxy_id", "galaxies", "galaxy_id"),
            ("model_id", "models", "model_id"),
            ("model_set_id", "model_sets", "model_set_id"),
        ),
    ),
    TapTable(
        "catalogue",
        "Each galaxy with the catalogue's M/L, as the pages, the API and the cone search give it: of the model set "
        "applied to its survey last, the prediction of the best-validated named model it has the inputs of "
        "(model_name; empty where the survey has not been predicted). Join predictions for every model's.",
        _catalogue_select,
        (*_GALAXY_COLUMNS, "model_set_id", "model_set", "model_name", *_PREDICTED),
        keys=(
            ("galaxy_id", "galaxies", "galaxy_id"),
            ("survey_id", "surveys", "survey_id"),
            ("model_set_id", "model_sets", "model_set_id"),
        ),
        sky=True,
    ),
)
BY_NAME = {t.qualified: t for t in TABLES}

#: TAP_SCHEMA's own tables (TAP 1.1, section 4), described in TAP_SCHEMA too.
_TEXT, _INT = "text", "integer"
TAP_SCHEMA_TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "schemas": (
        "the schemas of this service",
        [
            ("schema_name", _TEXT, "schema name, as queries use it"),
            ("utype", _TEXT, "utype of the schema"),
            ("description", _TEXT, "what the schema holds"),
            ("schema_index", _INT, "order of the schemas"),
        ],
    ),
    "tables": (
        "the tables of this service",
        [
            ("schema_name", _TEXT, "the table's schema"),
            ("table_name", _TEXT, "table name, schema-qualified"),
            ("table_type", _TEXT, "table or view"),
            ("utype", _TEXT, "utype of the table"),
            ("description", _TEXT, "what the table holds"),
            ("table_index", _INT, "order of the tables"),
        ],
    ),
    "columns": (
        "the columns of every table",
        [
            ("table_name", _TEXT, "the column's table"),
            ("column_name", _TEXT, "column name"),
            ("utype", _TEXT, "utype of the column"),
            ("ucd", _TEXT, "UCD1+ of the column"),
            ("unit", _TEXT, "VOUnit"),
            ("description", _TEXT, "what the column holds"),
            ("datatype", _TEXT, "VOTable datatype"),
            ("arraysize", _TEXT, "VOTable arraysize"),
            ("xtype", _TEXT, "VOTable xtype"),
            ("size", _INT, "length of fixed-size arrays (deprecated, TAP 1.0)"),
            ("principal", _INT, "1 if the column is one of the table's main ones"),
            ("indexed", _INT, "1 if an index serves the column"),
            ("std", _INT, "1 if a standard defines the column"),
            ("column_index", _INT, "order of the columns"),
        ],
    ),
    "keys": (
        "foreign keys between the tables",
        [
            ("key_id", _TEXT, "key id"),
            ("from_table", _TEXT, "the table that refers"),
            ("target_table", _TEXT, "the table referred to"),
            ("utype", _TEXT, "utype of the key"),
            ("description", _TEXT, "what the key means"),
        ],
    ),
    "key_columns": (
        "the columns of the foreign keys",
        [
            ("key_id", _TEXT, "key id"),
            ("from_column", _TEXT, "column of from_table"),
            ("target_column", _TEXT, "column of target_table"),
        ],
    ),
}

#: TAP_SCHEMA's own foreign keys: (from table, column, target table, column).
TAP_SCHEMA_KEYS = (
    ("tables", "schema_name", "schemas", "schema_name"),
    ("columns", "table_name", "tables", "table_name"),
    ("keys", "from_table", "tables", "table_name"),
    ("keys", "target_table", "tables", "table_name"),
    ("key_columns", "key_id", "keys", "key_id"),
)
#: Column names ADQL reserves: TAP_SCHEMA names them delimited ("size").
ADQL_RESERVED = {"size"}

#: PostgreSQL type (information_schema.columns.data_type) -> VOTable (datatype, arraysize, xtype).
VOTABLE_TYPES = {
    "double precision": ("double", None, None),
    "numeric": ("double", None, None),
    "real": ("float", None, None),
    "bigint": ("long", None, None),
    "integer": ("int", None, None),
    "smallint": ("short", None, None),
    "boolean": ("boolean", None, None),
}
TEXT_TYPE = ("char", "*", None)


def column_units() -> dict[str, str]:
    """Every TAP column's unit by column name (IN_UNIT converts from it); a name means one quantity throughout."""
    return {name: column.unit for table in TABLES for name in table.columns if (column := table.column(name)).unit}


def tap_tables() -> dict[str, bool]:
    """Every table ADQL may name (qualified, lower case) -> whether it has the sky index."""
    found = {t.qualified: t.sky for t in TABLES}
    found.update({f"{TAP_SCHEMA}.{name}": False for name in TAP_SCHEMA_TABLES})
    return found


def uninstall(cursor) -> None:
    """Drop the TAP views and TAP_SCHEMA (before migrations, which may alter the columns the views read)."""
    cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    cursor.execute(f"DROP SCHEMA IF EXISTS {TAP_SCHEMA} CASCADE")


def install(cursor) -> None:
    """Create the views, fill TAP_SCHEMA from the column description and grant the reader role."""
    uninstall(cursor)
    cursor.execute(f"CREATE SCHEMA {SCHEMA}")
    for table in TABLES:
        cursor.execute(f"CREATE VIEW {table.qualified} ({', '.join(table.columns)}) AS {table.select_sql()}")
    cursor.execute(f"CREATE SCHEMA {TAP_SCHEMA}")
    for name, (_, columns) in TAP_SCHEMA_TABLES.items():
        cursor.execute(f"CREATE TABLE {TAP_SCHEMA}.{name} ({', '.join(f'{c} {t}' for c, t, _ in columns)})")
    _fill_tap_schema(cursor)
    _grant_reader(cursor)


def _types(cursor, schema: str) -> dict[tuple[str, str], str]:
    cursor.execute("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s", [schema])
    return {(t, c): d for t, c, d in cursor.fetchall()}


def _fill_tap_schema(cursor) -> None:
    insert = f"INSERT INTO {TAP_SCHEMA}.%s VALUES (%s)"
    rows: dict[str, list[tuple]] = {name: [] for name in TAP_SCHEMA_TABLES}
    rows["schemas"] += [
        (SCHEMA, None, "the MorphoMass catalogue: galaxies, model sets, models and their M/L predictions", 0),
        (TAP_SCHEMA, None, "the description of this service's tables (TAP 1.1)", 1),
    ]
    types = _types(cursor, SCHEMA)
    for index, table in enumerate(TABLES):
        rows["tables"].append((SCHEMA, table.qualified, "view", None, table.description, index))
        for position, name in enumerate(table.columns):
            column = table.column(name)
            datatype, arraysize, xtype = VOTABLE_TYPES.get(types[(table.name, name)], TEXT_TYPE)
            rows["columns"].append(
                (
                    table.qualified,
                    name,
                    None,
                    column.ucd or None,
                    column.unit,
                    column.description,
                    datatype,
                    arraysize,
                    xtype,
                    None,
                    int(name in _PRINCIPAL),
                    int(name in _INDEXED),
                    0,
                    position,
                )
            )
        for from_column, target, target_column in table.keys:
            key = f"{table.name}.{from_column}"
            rows["keys"].append((key, table.qualified, f"{SCHEMA}.{target}", None, f"{from_column} -> {target}"))
            rows["key_columns"].append((key, from_column, target_column))
    for index, (name, (description, columns)) in enumerate(TAP_SCHEMA_TABLES.items()):
        rows["tables"].append((TAP_SCHEMA, f"{TAP_SCHEMA}.{name}", "table", None, description, len(TABLES) + index))
        for position, (column, sql_type, what) in enumerate(columns):
            datatype, arraysize, _ = TEXT_TYPE if sql_type == _TEXT else ("int", None, None)
            delimited = f'"{column}"' if column in ADQL_RESERVED else column
            rows["columns"].append(
                (f"{TAP_SCHEMA}.{name}", delimited, None, None, None, what, datatype, arraysize, None, None, 1, 0, 1, position)
            )
    for number, (from_table, from_column, target_table, target_column) in enumerate(TAP_SCHEMA_KEYS):
        key = f"tap_schema_{number}"
        rows["keys"].append(
            (key, f"{TAP_SCHEMA}.{from_table}", f"{TAP_SCHEMA}.{target_table}", None, f"{from_column} -> {target_table}")
        )
        rows["key_columns"].append((key, from_column, target_column))
    for name, values in rows.items():
        if values:
            marks = ", ".join(["%s"] * len(values[0]))
            cursor.executemany(insert % (name, marks), values)


def _grant_reader(cursor) -> None:
    """The role queries run as: SELECT on the TAP tables only (made where this database user may make roles)."""
    cursor.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    allowed = cursor.fetchone()
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [READER_ROLE])
    exists = cursor.fetchone() is not None
    if not exists and not (allowed and allowed[0]):
        log.warning("TAP: no role %s and no right to create it; queries run as the service's user", READER_ROLE)
        return
    if not exists:  # roles belong to the cluster: another database may make it at the same moment
        taken = "duplicate_object OR unique_violation"
        cursor.execute(f"DO $$ BEGIN CREATE ROLE {READER_ROLE} NOLOGIN; EXCEPTION WHEN {taken} THEN NULL; END $$")
    for schema in (SCHEMA, TAP_SCHEMA):
        cursor.execute(f"GRANT USAGE ON SCHEMA {schema} TO {READER_ROLE}")
        cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {READER_ROLE}")
    cursor.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [READER_ROLE])
    if not cursor.fetchone()[0] and allowed and allowed[0]:
        cursor.execute(f"GRANT {READER_ROLE} TO current_user")
