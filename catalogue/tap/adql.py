"""ADQL 2.0 to PostgreSQL, with the geometry compiled to the catalogue's own sky index.

The grammar is queryparser's (the ANTLR ADQL grammar django-daiquiri uses); its own
translator is not used: it turns CONTAINS and DISTANCE into pg_sphere operators, an
extension this database does not have, and it evaluates query text with ``eval``. Here the
parse tree is written back as SQL token by token, and only the parts that need it are
rewritten:

* ``TOP n`` becomes ``LIMIT n``; ADQL's LOG, LOG10, TRUNCATE and RAND their PostgreSQL names.
* Every table must be one TAP_SCHEMA lists (``tables``); it is written schema-qualified, so
  no ADQL reaches a table outside that list. Functions other than ADQL's own are refused.
* ``CONTAINS(POINT, CIRCLE | BOX | POLYGON)`` and ``DISTANCE(POINT, POINT)`` become
  arithmetic on unit vectors (the exact test; a chord for circles, great-circle normals for
  convex polygons). Where the point is a sky table's own ``ra, dec`` and the region is
  constant, the test is also given the HEALPix ranges that cover the region's bounding
  circle, so PostgreSQL walks the ``healpix`` index instead of the whole table.
* ``INTERSECTS`` where one side is a POINT is CONTAINS (ADQL 2.1 allows nothing else of it
  here); AREA, CENTROID, REGION and geometry values as columns are refused by name.
* A crossmatch of two tables' positions (CONTAINS of one in a CIRCLE round the other, or
  DISTANCE < r) where one is an uploaded table (TAP_UPLOAD) and the other a catalogue table
  with the sky index becomes ``galaxy_id = ANY(<the uploaded row's matches>)``: the upload's
  loader (:mod:`catalogue.tap.uploads`) finds each row's galaxies within the radius first,
  through the ``healpix`` index, and the query joins on the primary key. PostgreSQL does not
  drive an index from a join's OR of ranges, so the nine pixels round each row cannot be
  written into the query itself (a 2,000-row upload took 56 s that way).
* ADQL 2.1: LOWER, UPPER and COALESCE (which the grammar reads only as literals or not at
  all, so they are renamed before parsing and written back after), ``IN_UNIT`` of a column
  with a unit, ``WITH``, ``OFFSET``, ``ILIKE``.

This module imports nothing of Django.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field

import antlr4
import numpy as np
from antlr4.atn.PredictionMode import PredictionMode
from antlr4.error.ErrorListener import ErrorListener
from antlr4.error.Errors import ParseCancellationException
from antlr4.error.ErrorStrategy import BailErrorStrategy
from antlr4.tree.Tree import TerminalNode
from astropy.coordinates import angular_separation
from queryparser.adql.ADQLLexer import ADQLLexer
from queryparser.adql.ADQLParser import ADQLParser as P

from pipeline.sky import INDEX_ORDER, PIXEL_DEG_AT_NSIDE_1, cone_index_ranges, unit_vector
from pipeline.sky import chord2 as sky_chord2


class AdqlError(ValueError):
    """A query this service cannot run; the message says what and where."""


#: ADQL function -> PostgreSQL function, where the names differ.
RENAMED_FUNCTIONS = {"LOG": "ln", "LOG10": "log", "TRUNCATE": "trunc"}
#: ADQL 2.1's functions the grammar does not read as functions of any value: renamed before
#: parsing to a name it reads as a user-defined function, written back as PostgreSQL's.
_HIDDEN_PREFIX = "MORPHOMASS_ADQL_"
STANDARD_FUNCTIONS = {"LOWER": "lower", "UPPER": "upper", "COALESCE": "coalesce"}
_STANDARD_CALL = re.compile(r"\b(" + "|".join(STANDARD_FUNCTIONS) + r")\s*\(", re.IGNORECASE)
_STRING_LITERAL = re.compile(r"('(?:[^']|'')*')")
#: Coordinate systems a POINT, CIRCLE, BOX or POLYGON may name (positions are ICRS).
COORDINATE_SYSTEMS = {"", "ICRS", "ICRS GEOCENTER", "J2000", "FK5"}
#: Refused constructs: rule -> what the error calls it.
UNSUPPORTED = {
    P.AreaContext: "AREA",
}
for _name in ("CentroidContext", "RegionContext", "Coord1Context", "Coord2Context", "CoordsysContext"):
    if hasattr(P, _name):
        UNSUPPORTED[getattr(P, _name)] = _name.removesuffix("Context").upper()
#: Geometry met outside the places this service compiles it -> the error.
OUTSIDE_CONTAINS = {
    P.PointContext: "POINT is supported inside CONTAINS and DISTANCE only (select ra and dec instead)",
    P.CircleContext: "CIRCLE is supported inside CONTAINS only",
    P.BoxContext: "BOX is supported inside CONTAINS only",
    P.PolygonContext: "POLYGON is supported inside CONTAINS only",
}
#: The largest TOP accepted (MAXREC limits what is returned in any case).
MAX_TOP = 100_000_000
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ARITHMETIC = re.compile(r"^[\d.eE+\-*/()]+$")
_OPERATIONS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class SkyColumns:
    """Where a table keeps its position, unit vector, HEALPix index and galaxy id (:mod:`pipeline.sky`).

    An uploaded table (``covers``) keeps its own names for ra and dec, the derived columns
    under names ADQL cannot write (a leading underscore), and per crossmatch radius each
    row's matching galaxy ids (:func:`match_column`).
    """

    ra: str = "ra"
    dec: str = "dec"
    x: str = "sky_x"
    y: str = "sky_y"
    z: str = "sky_z"
    healpix: str = "healpix"
    covers: bool = False
    id: str | None = "galaxy_id"  # the catalogue's galaxy id, which an upload's matches name


#: The sky columns of the service's own tables.
SKY = SkyColumns()
#: The largest crossmatch radius, as a fraction of a pixel's nominal size, for which the nine
#: pixels round a position are taken to hold its whole circle: a third leaves room for HEALPix's
#: narrower pixels (tests/test_tap_upload.py checks the matches against astropy's
#: search_around_sky at RA = 0 and the pole, and fails with too large a fraction).
COVER_FRACTION = 1.0 / 3.0


def cover_order(radius_deg: float) -> int | None:
    """The finest HEALPix order whose nine pixels round a position hold its whole circle of ``radius_deg``."""
    if radius_deg <= 0:
        return INDEX_ORDER
    order = math.floor(math.log2(PIXEL_DEG_AT_NSIDE_1 * COVER_FRACTION / radius_deg))
    return min(order, INDEX_ORDER) if order >= 1 else None


def match_column(radius_deg: float) -> str:
    """The uploaded table's column of each row's galaxy ids within ``radius_deg`` (named in microarcseconds)."""
    return f"_match{round(radius_deg * 3.6e9)}"


@dataclass
class Translation:
    """A query written for PostgreSQL, with the TAP tables it reads (schema-qualified) and the
    crossmatch radii (degrees) whose matches each uploaded table needs."""

    sql: str
    tables: list[str] = field(default_factory=list)
    covers: dict[str, set[float]] = field(default_factory=dict)


class _Listener(ErrorListener):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802, ARG002 - ANTLR's API
        near = getattr(offendingSymbol, "text", None)
        self.errors.append(f"line {line}, column {column + 1}" + (f" near {near!r}" if near and near != "<EOF>" else ""))


def parse(query: str):
    """The ADQL parse tree of ``query`` (:class:`AdqlError` naming where the syntax breaks).

    ANTLR's two-stage strategy: the fast SLL prediction first (4 ms for a cone query, where
    full LL took 250 ms in Python), and full LL, which reports where the syntax breaks, only
    when SLL gives up, as it does on any query that is not valid ADQL.
    """
    text = query.strip().rstrip(";").strip()
    if not text:
        raise AdqlError("QUERY is empty")
    if "\x00" in text:
        raise AdqlError("QUERY contains a NUL byte")
    text = _rename_standard_functions(text)
    try:
        parser = _parser(text, fast=True)
        tree = parser.query()
    except ParseCancellationException:
        parser = _parser(text, fast=False)
        tree = parser.query()
    listener = parser.listener
    if listener.errors:
        raise AdqlError("ADQL syntax error at " + "; ".join(listener.errors[:3]))
    if tree.stop is None or tree.stop.tokenIndex + 1 < len(parser.getTokenStream().tokens) - 1:
        raise AdqlError("QUERY must be one SELECT statement (nothing after its ';')")
    return tree


def _rename_standard_functions(text: str) -> str:
    """LOWER( UPPER( COALESCE( outside string literals as names the grammar reads as functions."""
    parts = _STRING_LITERAL.split(text)
    for i in range(0, len(parts), 2):  # the odd parts are the literals
        parts[i] = _STANDARD_CALL.sub(lambda m: f"{_HIDDEN_PREFIX}{m.group(1).upper()}(", parts[i])
    return "".join(parts)


def _parser(text: str, fast: bool) -> P:
    listener = _Listener()
    lexer = ADQLLexer(antlr4.InputStream(text + ";"))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = P(antlr4.CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.listener = listener
    if fast:
        parser._interp.predictionMode = PredictionMode.SLL
        parser._errHandler = BailErrorStrategy()
    else:
        parser.addErrorListener(listener)
    return parser


def translate(
    query: str,
    tables: dict[str, bool | SkyColumns],
    sql_names: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
) -> Translation:
    """``query`` (ADQL) as PostgreSQL SQL.

    ``tables`` maps each TAP table's qualified name (``schema.table``, lower case) to
    whether it has the sky-index columns (True: :data:`SKY`'s names; or its own
    :class:`SkyColumns`). A table may also be named without its schema where that name is
    unique. ``sql_names`` gives the SQL name of a table that is not its ADQL name (an
    upload's temporary table); ``units`` each column's unit, for IN_UNIT.
    """
    return _Writer(tables, sql_names or {}, units or {}).write(parse(query))


def _text(node) -> str:
    return node.getText()


def _chain(node):
    """The innermost node of a chain of single-child rules (a value that is one column, one literal)."""
    while not isinstance(node, (TerminalNode, P.Column_referenceContext)) and node.getChildCount() == 1:
        node = node.getChild(0)
    return node


def _number(node) -> float | None:
    """The value of a constant (numbers, signs, + - * / and parentheses: ``2.0/3600``), None for any other expression."""
    text = re.sub(r"\s+", "", _text(node))
    if _NUMBER.match(text):
        return float(text)
    if not _ARITHMETIC.match(text) or len(text) > 200:
        return None
    try:
        return _evaluate(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _evaluate(node: ast.AST) -> float:
    """Constant arithmetic, read from Python's parse of it (never evaluated as code)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS:
        return _OPERATIONS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not constant arithmetic")


@dataclass
class _Point:
    ra: str  # SQL of the right ascension, degrees
    dec: str  # SQL of the declination, degrees
    sky: str | None = None  # qualifier of a sky table whose own ra, dec these are ("" unqualified)
    const: tuple[float, float] | None = None
    table: str | None = None  # that sky table
    columns: SkyColumns = SKY  # its sky columns

    def column(self, name: str) -> str:
        return f"{self.sky}.{name}" if self.sky else name

    def vector(self) -> tuple[str, str, str]:
        """SQL of the unit vector."""
        if self.sky is not None:
            return self.column(self.columns.x), self.column(self.columns.y), self.column(self.columns.z)
        if self.const is not None:
            return tuple(repr(float(v)) for v in unit_vector(*self.const))
        ra, dec = f"radians({self.ra})", f"radians({self.dec})"
        return f"(cos({dec}) * cos({ra}))", f"(cos({dec}) * sin({ra}))", f"sin({dec})"


def _chord2(a: _Point, b: _Point) -> str:
    """SQL of the squared chord between two points' unit vectors (exact at every separation)."""
    terms = [f"(({x}) - ({y})) * (({x}) - ({y}))" for x, y in zip(a.vector(), b.vector(), strict=True)]
    return " + ".join(terms)


def _degrees_of_chord2(chord2: str) -> str:
    return f"degrees(2.0 * asin(least(1.0, sqrt({chord2}) / 2.0)))"


def _index_filter(point: _Point, center: tuple[float, float], radius_deg: float) -> str:
    """The HEALPix ranges covering a circle, as a predicate the (healpix) index answers."""
    if point.sky is None or radius_deg >= 90.0:
        return ""
    healpix = point.column(point.columns.healpix)
    ranges = cone_index_ranges(center[0] % 360.0, center[1], radius_deg)
    return "(" + " OR ".join(f"{healpix} BETWEEN {lo} AND {hi - 1}" for lo, hi in ranges) + ")"


def _descendants(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, TerminalNode):
            yield node
            stack.extend(node.getChildren())


def _unit_factor(unit: str, target: str) -> float:
    """What a value in ``unit`` is multiplied by to be in ``target`` (VOUnit strings)."""
    from astropy import units as u

    try:
        source, wanted = u.Unit(unit, format="vounit"), u.Unit(target, format="vounit")
    except ValueError:
        raise AdqlError(f"IN_UNIT: {target!r} is not a VOUnit") from None
    try:
        return float(source.to(wanted))
    except u.UnitConversionError:
        raise AdqlError(f"IN_UNIT: {unit!r} cannot be written in {target!r}") from None


class _Writer:
    """Writes one parse tree back as SQL, rewriting what PostgreSQL reads otherwise."""

    def __init__(self, tables: dict[str, bool | SkyColumns], sql_names: dict[str, str], units: dict[str, str]) -> None:
        self.tables = {k.lower(): (SKY if v is True else v or None) for k, v in tables.items()}
        self.sql_names = {k.lower(): v for k, v in sql_names.items()}
        self.units = {k.lower(): v for k, v in units.items()}
        self.ctes: set[str] = set()
        self.covers: dict[str, set[float]] = {}
        short: dict[str, list[str]] = {}
        for name in self.tables:
            short.setdefault(name.rsplit(".", 1)[-1], []).append(name)
        self.short = {k: v[0] for k, v in short.items() if len(v) == 1}
        self.used: list[str] = []
        self.aliases: dict[str, str | None] = {}  # correlation name -> qualified table (None: ambiguous)
        self.references = 0

    # -- the walk ---------------------------------------------------------------------------
    def write(self, tree) -> Translation:
        self._collect_tables(tree)
        body = self.emit(tree).strip().rstrip(";").strip()
        return Translation(sql=body, tables=list(dict.fromkeys(self.used)), covers=self.covers)

    def emit(self, node) -> str:
        if isinstance(node, TerminalNode):
            text = node.getText()
            return "" if text in ("<EOF>", ";") else text
        kind = type(node)
        if kind in UNSUPPORTED:
            name = UNSUPPORTED[kind] or _text(node.getChild(0)).upper()
            raise AdqlError(f"{name} is not supported by this service")
        if kind in OUTSIDE_CONTAINS:
            raise AdqlError(OUTSIDE_CONTAINS[kind])
        handler = getattr(self, "_" + kind.__name__.removesuffix("Context").lower(), None)
        if handler is not None:
            return handler(node)
        return self.join(node)

    def join(self, node, sep: str = " ") -> str:
        return sep.join(part for part in (self.emit(c) for c in node.getChildren()) if part)

    # -- tables -----------------------------------------------------------------------------
    def _resolve(self, node) -> str:
        parts = [p.strip().strip('"').lower() for p in re.split(r"\s*\.\s*", _text(node))]
        if len(parts) > 2:
            parts = parts[-2:]  # a catalog name: ignored
        name = ".".join(parts)
        if len(parts) == 1 and name in self.ctes:
            return name
        found = name if name in self.tables else self.short.get(name) if len(parts) == 1 else None
        if found is None:
            known = ", ".join(sorted(self.tables))
            raise AdqlError(f"table {_text(node)!r} is not one this service serves (TAP_SCHEMA.tables: {known})")
        return found

    def _collect_tables(self, tree) -> None:
        """The correlation names of every table reference, so a POINT of ``g.ra, g.dec`` knows g's table."""
        self.ctes = {
            _text(node.query_name()).strip('"').lower() for node in _descendants(tree) if isinstance(node, P.With_queryContext)
        }
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, TerminalNode):
                continue
            if isinstance(node, P.Table_referenceContext) and node.table_name() is not None:
                table = self._resolve(node.table_name())
                self.references += 1
                spec = node.correlation_specification()
                names = [_text(spec.correlation_name()).strip('"').lower()] if spec is not None else []
                names += [] if spec is not None else [table, table.rsplit(".", 1)[-1]]
                for name in names:
                    self.aliases[name] = table if self.aliases.get(name, table) == table else None
                self.aliases.setdefault("", table)
            stack.extend(node.getChildren())
        if self.references != 1:
            self.aliases.pop("", None)

    def _table_name(self, node) -> str:
        table = self._resolve(node)
        if table in self.ctes:
            return f'"{table}"'
        self.used.append(table)
        return self._sql_name(table)

    def _sql_name(self, table: str) -> str:
        return self.sql_names.get(table) or ".".join(f'"{part}"' for part in table.split("."))

    def _query_name(self, node) -> str:
        return f'"{_text(node).strip(chr(34)).lower()}"'

    # -- functions --------------------------------------------------------------------------
    def _user_defined_function(self, node) -> str:
        """ADQL 2.1's LOWER, UPPER, COALESCE and IN_UNIT; any other function is refused by its name."""
        name = _text(node.user_defined_function_name()).upper()
        params = node.user_defined_function_param()
        if name.startswith(_HIDDEN_PREFIX):
            function = STANDARD_FUNCTIONS[name.removeprefix(_HIDDEN_PREFIX)]
            return f"{function}({', '.join(self.emit(p) for p in params)})"
        if name == "IN_UNIT":
            return self._in_unit(params)
        raise AdqlError(f"{name} is not supported by this service")

    def _in_unit(self, params) -> str:
        """IN_UNIT(column, 'unit'): the column's value in another unit of the same dimension."""
        if len(params) != 2:
            raise AdqlError("IN_UNIT takes a column and a unit: IN_UNIT(ra, 'arcsec')")
        column = _chain(params[0])
        target = _text(params[1]).strip()
        if not (isinstance(column, P.Column_referenceContext) and target.startswith("'")):
            raise AdqlError("IN_UNIT takes a column with a unit and a unit in quotes: IN_UNIT(ra, 'arcsec')")
        name = re.split(r"\s*\.\s*", _text(column))[-1].strip('"').lower()
        unit = self.units.get(name)
        if not unit:
            raise AdqlError(f"IN_UNIT: column {_text(column)!r} has no unit here")
        factor = _unit_factor(unit, target.strip("'"))
        return f"(({self.emit(params[0])}) * {factor!r})"

    # -- plain rewrites ---------------------------------------------------------------------
    def _column_reference(self, node) -> str:
        return self.join(node, "")

    def _qualifier(self, node) -> str:
        child = node.getChild(0)
        if isinstance(child, P.Table_nameContext) and child.getChildCount() > 1:
            return self._table_name(child)
        return self.join(node, "")

    def _comp_op(self, node) -> str:
        return self.join(node, "")

    def _select_query(self, node) -> str:
        limit = ""
        parts = []
        for child in node.getChildren():
            if isinstance(child, P.Set_limitContext):
                top = int(_text(child.getChild(1)))
                if top > MAX_TOP:
                    raise AdqlError(f"TOP {top} is more than {MAX_TOP}")
                limit = f"LIMIT {top}"
            else:
                parts.append(self.emit(child))
        return " ".join(p for p in [*parts, limit] if p)

    def _math_function(self, node) -> str:
        name = _text(node.getChild(0)).upper()
        if name == "RAND":
            return "random()"
        args = [self.emit(c) for c in node.numeric_value_expression()]
        if name in ("ROUND", "TRUNCATE"):  # PostgreSQL rounds to n places in numeric only
            places = node.signed_integer() or node.unsigned_decimal()
            digits = f", {int(_text(places))}" if places is not None else ""
            function = "round" if name == "ROUND" else "trunc"
            return f"cast({function}(cast({args[0]} AS numeric){digits}) AS double precision)"
        if name == "MOD":
            return f"cast(mod(cast({args[0]} AS numeric), cast({args[1]} AS numeric)) AS double precision)"
        return f"{RENAMED_FUNCTIONS.get(name, name.lower())}({', '.join(args)})"

    def _trig_function(self, node) -> str:
        name = _text(node.getChild(0)).lower()
        return name + "".join(self.emit(c) for c in list(node.getChildren())[1:])

    def _set_function_specification(self, node) -> str:
        return _text(node.getChild(0)).lower() + " ".join(self.emit(c) for c in list(node.getChildren())[1:])

    # -- geometry ---------------------------------------------------------------------------
    def _check_system(self, node) -> None:
        system = node.coord_sys() if hasattr(node, "coord_sys") else None
        if system is None:
            return
        name = " ".join(_text(system).strip("'").upper().split())
        if name not in COORDINATE_SYSTEMS:
            raise AdqlError(f"coordinate system {name!r} is not supported: positions here are ICRS")

    def point_of(self, node) -> _Point:
        """A POINT (or a coordinate pair) as SQL, knowing when it is a sky table's own position."""
        node = _chain(node)
        if isinstance(node, P.PointContext):
            self._check_system(node)
            coordinates = node.coordinates()
        elif isinstance(node, P.CoordinatesContext):
            coordinates = node
        else:
            raise AdqlError(f"expected a POINT, got {_text(node)!r}")
        ra_node, dec_node = coordinates.coordinate1(), coordinates.coordinate2()
        ra, dec = self.emit(ra_node), self.emit(dec_node)
        ra_value, dec_value = _number(ra_node), _number(dec_node)
        if ra_value is not None and dec_value is not None:
            if not -90.0 <= dec_value <= 90.0:
                raise AdqlError(f"declination {dec_value:g} is outside [-90, 90]")
            return _Point(ra, dec, const=(ra_value, dec_value))
        return self._sky_point(ra_node, dec_node)

    def _sky_point(self, ra_node, dec_node) -> _Point:
        """A point of (ra, dec) expressions, knowing when they are one sky table's own position."""
        point = _Point(self.emit(ra_node), self.emit(dec_node))
        ra, dec = _chain(ra_node), _chain(dec_node)
        if not (isinstance(ra, P.Column_referenceContext) and isinstance(dec, P.Column_referenceContext)):
            return point
        split = [re.split(r"\s*\.\s*", _text(c).lower()) for c in (ra, dec)]
        if split[0][:-1] != split[1][:-1]:
            return point
        qualifier = ".".join(p.strip('"') for p in split[0][:-1])
        table = self.aliases.get(qualifier)
        columns = self.tables.get(table) if table else None
        if columns is None or [s[-1].strip('"') for s in split] != [columns.ra.lower(), columns.dec.lower()]:
            return point
        point.table, point.columns = table, columns
        point.sky = self._sql_name(table) if qualifier and "." in qualifier else qualifier
        return point

    def _region(self, node) -> tuple[str, tuple[float, float, float] | None]:
        """A CIRCLE, BOX or POLYGON as (SQL of the exact test of :attr:`_tested`, constant bounding circle)."""
        node = _chain(node)
        point = self._tested
        if isinstance(node, P.CircleContext):
            system = node.coord_sys()
            if system is not None and not _text(system).startswith("'"):
                # CIRCLE(ra, dec, r) with a column or expression for ra reads as (system, center, r): undo that
                center = self._sky_point(system, node.circle_center())
            else:
                self._check_system(node)
                center = self.point_of(node.circle_center().getChild(0))
            radius_node = node.radius()
            radius = _number(radius_node)
            if radius is None:
                radius_sql = self.emit(radius_node)
                chord = f"power(2.0 * sin(radians(least(180.0, {radius_sql})) / 2.0), 2)"
                return f"({_chord2(point, center)} <= {chord})", None
            if radius < 0:
                raise AdqlError(f"CIRCLE radius {radius:g} is negative")
            chord2 = sky_chord2(radius)
            test = f"({_chord2(point, center)} <= {chord2!r})"
            cover = self._cover_filter(point, center, radius)
            if cover:
                return f"({cover} AND {test})", None
            return test, (*center.const, radius) if center.const else None
        if isinstance(node, P.BoxContext):
            self._check_system(node)
            values = [_number(c) for c in node.getChildren() if isinstance(c, P.Numeric_value_expressionContext)]
            if node.coordinates() is not None:
                values = [_number(node.coordinates().coordinate1()), _number(node.coordinates().coordinate2()), *values]
            if len(values) != 4 or any(v is None for v in values):
                raise AdqlError("BOX takes constant numbers only: BOX('ICRS', ra, dec, width, height) in degrees")
            return self._box_test(point, *values)
        if isinstance(node, P.PolygonContext):
            self._check_system(node)
            vertices = []
            for pair in node.coordinates():
                ra, dec = _number(pair.coordinate1()), _number(pair.coordinate2())
                if ra is None or dec is None:
                    raise AdqlError("POLYGON takes constant vertices only, in degrees")
                vertices.append((ra, dec))
            return self._polygon_test(point, vertices)
        raise AdqlError(f"CONTAINS needs a CIRCLE, BOX or POLYGON as its second argument, got {_text(node)!r}")

    def _cover_filter(self, a: _Point, b: _Point, radius_deg: float) -> str:
        """A crossmatch of an uploaded table's positions with a catalogue table's within a constant
        radius: the catalogue row's galaxy_id among the uploaded row's matches (found as it loads)."""
        if a.table is None or b.table is None or a.table == b.table:
            return ""
        if a.columns.covers and not b.columns.covers:
            a, b = b, a
        if a.columns.covers or not b.columns.covers or not a.columns.id or cover_order(radius_deg) is None:
            return ""
        self.covers.setdefault(b.table, set()).add(radius_deg)
        return f"({a.column(a.columns.id)} = ANY({b.column(match_column(radius_deg))}))"

    def _box_test(self, point: _Point, ra: float, dec: float, width: float, height: float):
        if width <= 0 or height <= 0:
            raise AdqlError("BOX width and height must be positive")
        low, high = max(-90.0, dec - height / 2), min(90.0, dec + height / 2)
        tests = [f"({point.dec}) BETWEEN {low!r} AND {high!r}"]
        if width < 360:
            tests.append(f"mod(cast(({point.ra}) - ({ra - width / 2!r}) + 720.0 AS numeric), 360) <= {width!r}")
        # the bounding circle: the farthest of many points on the box's edges, plus a step
        edge = np.linspace(0.0, 1.0, 65)
        ras = np.concatenate(
            [
                ra - width / 2 + width * edge,
                np.full(65, ra + width / 2),
                ra + width / 2 - width * edge,
                np.full(65, ra - width / 2),
            ]
        )
        decs = np.concatenate([np.full(65, low), low + (high - low) * edge, np.full(65, high), high - (high - low) * edge])
        farthest = np.max(angular_separation(np.radians(ra), np.radians(dec), np.radians(ras), np.radians(decs)))
        radius = float(np.degrees(farthest)) + (width + height) / 64 + 1e-6
        bounding = (ra, dec, radius) if width < 180 and radius < 90 else None
        return "(" + " AND ".join(tests) + ")", bounding

    def _polygon_test(self, point: _Point, vertices: list[tuple[float, float]]):
        if len(vertices) < 3:
            raise AdqlError("POLYGON needs at least 3 vertices")
        v = np.array([unit_vector(ra, dec) for ra, dec in vertices], dtype=float)
        normals = np.cross(v, np.roll(v, -1, axis=0))
        sides = normals @ v.T  # [edge, vertex]: which side of each edge each vertex is on
        mask = ~(np.eye(len(v), dtype=bool) | np.roll(np.eye(len(v), dtype=bool), 1, axis=1))
        if np.all(sides[mask] <= 1e-12):
            normals = -normals
        elif not np.all(sides[mask] >= -1e-12):
            raise AdqlError("POLYGON must be convex (split a concave one into convex ones joined by OR)")
        x, y, z = point.vector()
        tests = [f"({n[0]!r} * {x} + {n[1]!r} * {y} + {n[2]!r} * {z} >= 0)" for n in normals.tolist()]
        center = v.sum(axis=0)
        bounding = None
        if np.linalg.norm(center) > 1e-9:
            center /= np.linalg.norm(center)
            cosines = v @ center
            if cosines.min() > 0:
                radius = math.degrees(math.acos(float(cosines.min()))) + 1e-6
                c_dec = math.degrees(math.asin(float(np.clip(center[2], -1, 1))))
                c_ra = math.degrees(math.atan2(center[1], center[0])) % 360.0
                bounding = (c_ra, c_dec, radius)
        return "(" + " AND ".join(tests) + ")", bounding

    def contains_sql(self, node) -> str:
        """CONTAINS(POINT, region) (or INTERSECTS of a point and a region) as a boolean SQL test,
        index ranges included where they apply."""
        arguments = [c for c in node.getChildren() if isinstance(c, P.Geometry_value_expressionContext)]
        intersects = isinstance(node, P.IntersectsContext)
        name = "INTERSECTS" if intersects else "CONTAINS"
        if len(arguments) != 2:
            raise AdqlError(f"{name} takes two geometries: {name}(POINT(...), CIRCLE(...))")
        if intersects and isinstance(_chain(arguments[1]), P.PointContext):
            arguments = arguments[::-1]
        first = _chain(arguments[0])
        if not isinstance(first, P.PointContext):
            if intersects:
                raise AdqlError("INTERSECTS is supported where one of its geometries is a POINT")
            raise AdqlError("CONTAINS is supported with a POINT as its first argument")
        self._tested = self.point_of(first)
        test, bounding = self._region(arguments[1])
        if bounding is not None:
            index = _index_filter(self._tested, bounding[:2], bounding[2])
            if index:
                test = f"({index} AND {test})"
        return test

    def _contains_predicate(self, node) -> str:
        children = list(node.getChildren())
        texts = [_text(c) for c in children]
        geometry = (P.ContainsContext, P.IntersectsContext)
        if isinstance(children[0], geometry):
            contains, value = children[0], texts[2]
        else:
            contains, value = children[2], texts[0]
        if texts[1] != "=" or value not in ("0", "1"):
            name = "INTERSECTS" if isinstance(contains, P.IntersectsContext) else "CONTAINS"
            raise AdqlError(f"{name}(...) can be compared with = 1 or = 0 only")
        test = self.contains_sql(contains)
        return test if value == "1" else f"(NOT {test})"

    _intersects_predicate = _contains_predicate

    def _contains(self, node) -> str:
        return f"(CASE WHEN {self.contains_sql(node)} THEN 1 ELSE 0 END)"

    _intersects = _contains

    def distance_points(self, node) -> tuple[_Point, _Point]:
        values = [c for c in node.getChildren() if isinstance(c, P.Coord_valueContext)]
        if len(values) == 2:
            return self.point_of(values[0]), self.point_of(values[1])
        numbers = [c for c in node.getChildren() if isinstance(c, P.Numeric_value_expressionContext)]
        if len(numbers) == 4:
            points = []
            for ra_node, dec_node in ((numbers[0], numbers[1]), (numbers[2], numbers[3])):
                ra, dec = _number(ra_node), _number(dec_node)
                if ra is not None and dec is not None:
                    points.append(_Point(self.emit(ra_node), self.emit(dec_node), const=(ra, dec)))
                else:
                    points.append(self._sky_point(ra_node, dec_node))
            return points[0], points[1]
        raise AdqlError("DISTANCE takes two POINTs (or ra1, dec1, ra2, dec2)")

    def _distance(self, node) -> str:
        a, b = self.distance_points(node)
        return _degrees_of_chord2(_chord2(a, b))

    def _comparison_predicate(self, node) -> str:
        """DISTANCE(p, constant point) < constant radius as a cone, so the sky index serves it."""
        children = list(node.getChildren())
        if len(children) == 3 and _text(children[1]) in ("<", "<="):
            left, right = _chain(children[0]), children[2]
            radius = _number(right)
            if isinstance(left, P.DistanceContext) and radius is not None:
                a, b = self.distance_points(left)
                if b.sky is not None and a.const is not None:
                    a, b = b, a
                chord2 = sky_chord2(radius)
                op = _text(children[1])
                if a.sky is not None and b.const is not None and radius >= 0:
                    test = f"({_chord2(a, b)} {op} {chord2!r})"
                    index = _index_filter(a, b.const, radius)
                    return f"({index} AND {test})" if index else test
                cover = self._cover_filter(a, b, radius) if radius >= 0 else ""
                if cover:
                    return f"({cover} AND ({_chord2(a, b)} {op} {chord2!r}))"
        return self.join(node)
