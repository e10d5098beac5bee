"""IVOA Simple Cone Search 1.03: /scs/?RA=&DEC=&SR=[&VERB=1|2|3][&SURVEY=name].

Answers a VOTable whose first three columns carry the UCDs the standard requires
(ID_MAIN, POS_EQ_RA_MAIN, POS_EQ_DEC_MAIN); VERB chooses how many columns follow. A bad
request is answered, as the standard says, with HTTP 200 and a VOTable holding one INFO
named "Error" that says what was wrong.
"""

from __future__ import annotations

import io
from functools import lru_cache

from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from django.http import HttpRequest, HttpResponse

from catalogue.columns import GALAXY_COLUMNS, PREDICTION_COLUMNS
from catalogue.models import Galaxy
from catalogue.selectors import galaxies_in_cone
from catalogue.services import export, export_sql

MAX_SR_DEG = 10.0
MAX_RECORDS = 100_000
#: Columns per verbosity; the first three carry the standard's UCDs.
VERB_COLUMNS = {
    1: ["objid", "ra", "dec"],
    2: ["objid", "ra", "dec", "z", "mag_g", "mag_i", "lum_g", "ml_g", "ml_g_err", "split", "morphology"],
    3: [c.name for c in GALAXY_COLUMNS],
}
#: The UCD1 words SCS 1.03 requires of its main columns.
UCDS = {"objid": "ID_MAIN", "ra": "POS_EQ_RA_MAIN", "dec": "POS_EQ_DEC_MAIN", "z": "REDSHIFT_HC"}
COLUMNS = {c.name: c for c in GALAXY_COLUMNS + PREDICTION_COLUMNS}
DATATYPES = {"int": "long", "float": "double", "str": "char"}
CONTENT_TYPE = "text/xml; charset=utf-8"


def error(message: str) -> HttpResponse:
    """The standard's error answer: HTTP 200, a VOTable whose INFO named Error says what was wrong."""
    document = VOTableFile()
    resource = Resource(type="results")
    document.resources.append(resource)
    resource.infos.append(Info(ID="Error", name="Error", value=message))
    buffer = io.BytesIO()
    document.to_xml(buffer, tabledata_format="tabledata")
    return HttpResponse(buffer.getvalue(), content_type=CONTENT_TYPE)


def _number(request: HttpRequest, name: str) -> float:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        raise ValueError(f"{name} is required (decimal degrees)")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number (decimal degrees)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite")
    return value


def cone_search(request: HttpRequest) -> HttpResponse:
    try:
        ra, dec, sr = (_number(request, k) for k in ("RA", "DEC", "SR"))
        if not -90 <= dec <= 90:
            raise ValueError(f"DEC={dec} is outside [-90, 90]")
        if not 0 <= sr <= MAX_SR_DEG:
            raise ValueError(f"SR={sr} must be in [0, {MAX_SR_DEG:g}] degrees")
        verb = int(request.GET.get("VERB", "2") or 2)
        if verb not in VERB_COLUMNS:
            raise ValueError(f"VERB={verb} must be 1, 2 or 3")
    except ValueError as exc:
        return error(str(exc))
    queryset = Galaxy.objects.exclude(status="rejected")
    if request.GET.get("SURVEY"):
        queryset = queryset.filter(survey__name=request.GET["SURVEY"])
    names = VERB_COLUMNS[verb]
    count, body = 0, b""
    if sr > 0:
        hits = galaxies_in_cone(ra % 360.0, dec, sr, queryset).order_by("objid")
        if export.database_formats_rows():
            count, text = export_sql.tabledata(hits, tuple(COLUMNS[n] for n in names), MAX_RECORDS, order="objid")
            body = text.encode()
        else:
            rows = list(hits.values_list(*names)[: MAX_RECORDS + 1])
            count, body = len(rows), export.tabledata_rows(rows[:MAX_RECORDS])
    header, footer = _frame(verb, count > MAX_RECORDS)
    return HttpResponse(header + body + footer, content_type=CONTENT_TYPE)


@lru_cache(maxsize=2 * len(VERB_COLUMNS))
def _frame(verb: int, overflow: bool) -> tuple[bytes, bytes]:
    """The document around the rows for a verbosity, built once (astropy's unit checks cost 40 ms each time)."""
    document = VOTableFile()
    resource = Resource(type="results")
    document.resources.append(resource)
    if overflow:
        resource.infos.append(
            Info(name="QUERY_STATUS", value="OVERFLOW", content=f"only the first {MAX_RECORDS} rows; use a smaller SR")
        )
    table = TableElement(document, name="results")
    resource.tables.append(table)
    for name in VERB_COLUMNS[verb]:
        column = COLUMNS[name]
        table.fields.append(
            Field(
                document,
                name=name,
                ID=name,
                datatype=DATATYPES[column.kind],
                unit=column.unit,
                ucd=UCDS.get(name),
                arraysize="*" if column.kind == "str" else None,
            )
        )
    table.create_arrays(0)
    return export.votable_frame(document)
