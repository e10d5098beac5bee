"""ADQL in the browser: the TAP tables with their columns, a query box, the first rows and downloads."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalogue.tap import query as tap_query
from catalogue.tap import schema as tap_schema
from catalogue.tap.adql import AdqlError
from webui.cells import format_cell

#: The page's first query, and its cap on rows (downloads through /tap/sync take more).
ADQL_EXAMPLE = (
    "SELECT TOP 20 c.survey, c.objid, c.z, c.morphology, c.ml_pred, c.ml_lo68, c.ml_hi68, c.mstar_pred\n"
    "FROM morphomass.catalogue AS c\n"
    "WHERE c.ml_pred IS NOT NULL\n"
    "ORDER BY c.ml_pred DESC"
)
ADQL_PAGE_ROWS = 1000
DOWNLOAD_FORMATS = ("votable", "csv", "fits")


def adql(request: HttpRequest) -> HttpResponse:
    text = request.GET.get("query", "").replace("\x00", "")
    try:
        shown = min(max(int(request.GET.get("maxrec") or 100), 1), ADQL_PAGE_ROWS)
    except ValueError:
        shown = 100
    context = {
        "query": text or ADQL_EXAMPLE,
        "maxrec": shown,
        "page_rows": ADQL_PAGE_ROWS,
        "maxrec_limit": f"{settings.TAP_MAXREC_LIMIT:,}",
        "tables": [(table, [(name, table.column(name)) for name in table.columns]) for table in tap_schema.TABLES],
    }
    if text.strip():
        try:
            prepared = tap_query.prepare(text, shown, settings.TAP_SYNC_TIMEOUT_S)
            context["rows"] = [[format_cell(v) for v in row] for row in tap_query.fetch(prepared, settings.TAP_SYNC_TIMEOUT_S)]
            context["columns"] = prepared.columns
            context["overflow"] = prepared.overflow
            context["downloads"] = [
                (fmt, "/tap/sync?" + urlencode({"LANG": "ADQL", "QUERY": text, "FORMAT": fmt})) for fmt in DOWNLOAD_FORMATS
            ]
        except (AdqlError, tap_query.QueryError) as exc:
            context["error"] = str(exc)
    return render(request, "webui/adql.html", context)
