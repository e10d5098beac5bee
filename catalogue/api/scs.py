"""IVOA Simple Cone Search 1.03: /scs/?RA=&DEC=&SR=[&VERB=1|2|3][&SURVEY=name].

Answers a VOTable whose first three columns carry the UCDs the standard requires
(ID_MAIN, POS_EQ_RA_MAIN, POS_EQ_DEC_MAIN), then the galaxy's survey (one objid can be in
several); VERB chooses how many columns follow: from VERB=2 on, the catalogue's prediction
(its main model, of the model set applied to the galaxy's survey last: M/L, its 68% interval, M*
and the out-of-selection flag, with units and UCDs), links to the galaxy's page and g
cutout, and its galaxy_id, which the DataLink service descriptor after the table names as the
ID of /datalink/links (TOPCAT and pyvo follow it to the cutouts, previews and predictions).
A bad request is answered, as the standard says, with HTTP 200 and a VOTable holding one INFO
named "Error" that says what was wrong; the API's throttles apply, and a throttled request
gets 429 with Retry-After and the same kind of VOTable.
"""

from __future__ import annotations

import io
from dataclasses import replace
from functools import lru_cache

from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from django.db.models import Case, CharField, F, FilteredRelation, Q, Value, When
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from catalogue import selectors
from catalogue.api.vo_refusals import refusal
from catalogue.columns import CATALOGUE_ML_COLUMNS, GALAXY_COLUMNS, PREDICTION_COLUMNS, SERVICE_COLUMNS, TAP_COLUMNS
from catalogue.models import Image
from catalogue.selectors import catalogue_choices
from catalogue.services import export, export_sql, writers
from catalogue.tap import datalink

MAX_SR_DEG = 10.0
MAX_RECORDS = 100_000
#: Columns per verbosity; the first three carry the standard's UCDs.
#: The catalogue's M/L (catalogue.selectors.catalogue_ml) and the links a row carries from VERB=2 on.
CATALOGUE_ML = ["ml", "ml_lo68", "ml_hi68", "mstar", "ml_model", "ml_model_set", "out_of_support"]
PREDICTED = [*CATALOGUE_ML, "galaxy_url", "cutout_g_url", "galaxy_id"]
VERB_COLUMNS = {
    1: ["objid", "ra", "dec", "survey"],
    2: ["objid", "ra", "dec", "survey", "z", "mag_g", "mag_i", "lum_g", "ml_g", "ml_g_err", "split", "morphology", *PREDICTED],
    3: ["objid", "ra", "dec", "survey", *(c.name for c in GALAXY_COLUMNS[3:]), *PREDICTED],
}
#: The UCD1 words SCS 1.03 requires of its main columns.
UCDS = {"objid": "ID_MAIN", "ra": "POS_EQ_RA_MAIN", "dec": "POS_EQ_DEC_MAIN", "z": "REDSHIFT_HC"}
COLUMNS = {c.name: c for c in GALAXY_COLUMNS + PREDICTION_COLUMNS + SERVICE_COLUMNS + CATALOGUE_ML_COLUMNS}
#: each row's DataLink ID, as text: clients match the {links} rows' IDs (text) with it by value
COLUMNS["galaxy_id"] = replace(next(c for c in TAP_COLUMNS if c.name == datalink.ID_COLUMN), kind="str")
#: Text columns that cannot hold "&", "<" or ">": numbers, the code's own model names, and links made of the
#: site's address (a host Django validated: letters, digits, dots, hyphens, a port) and a galaxy's id.
XML_SAFE = frozenset({"galaxy_id", "galaxy_url", "cutout_g_url", "ml_model"})
DATATYPES = {"int": "long", "float": "double", "str": "char"}
CONTENT_TYPE = "text/xml; charset=utf-8"


def error(message: str, status: int = 200) -> HttpResponse:
    """The standard's error answer: HTTP 200, a VOTable whose INFO named Error says what was wrong."""
    document = VOTableFile()
    resource = Resource(type="results")
    document.resources.append(resource)
    resource.infos.append(Info(ID="Error", name="Error", value=message))
    buffer = io.BytesIO()
    document.to_xml(buffer, tabledata_format="tabledata")
    return HttpResponse(buffer.getvalue(), content_type=CONTENT_TYPE, status=status)


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


class ConeSearch(APIView):
    """The cone search behind the API's authentication and throttles, answering VOTables only."""

    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle, UserRateThrottle]

    @extend_schema(exclude=True)  # an IVOA protocol, described by its standard, not by the OpenAPI schema
    def get(self, request, *args, **kwargs) -> HttpResponse:  # noqa: ARG002 - DRF's signature
        return cone_search(request._request)

    def handle_exception(self, exc: Exception) -> HttpResponse:
        """A refusal (a bad token, too many requests) as an error VOTable with its status, not DRF's JSON."""
        return refusal(exc, error) or super().handle_exception(exc)


def cone_search(request: HttpRequest) -> HttpResponse:
    try:
        ra, dec, sr = (_number(request, k) for k in ("RA", "DEC", "SR"))
        if not -90 <= dec <= 90:
            raise ValueError(f"DEC={dec} is outside [-90, 90]")
        if not 0 <= sr <= MAX_SR_DEG:
            raise ValueError(f"SR={sr} must be in [0, {MAX_SR_DEG:g}] degrees")
        raw_verb = request.GET.get("VERB", "2") or "2"
        if raw_verb not in {str(v) for v in VERB_COLUMNS}:
            raise ValueError(f"VERB={raw_verb!r} must be 1, 2 or 3")
        verb = int(raw_verb)
        surveys = None
        if request.GET.get("SURVEY"):
            surveys = selectors.surveys_named(request.GET["SURVEY"])
            if not surveys.exists():
                raise ValueError(f"SURVEY={request.GET['SURVEY']!r}: no survey of that name")
    except ValueError as exc:
        return error(str(exc))
    names = VERB_COLUMNS[verb]
    count, body = 0, b""
    if sr > 0:
        survey_names = selectors.searchable_survey_names(surveys)
        survey_ids = tuple(pk for pk, _ in survey_names)
        base = request.build_absolute_uri("/").rstrip("/")
        predicted = bool(set(PREDICTED) & set(names))
        candidates = selectors.survey_candidates_by_id(survey_ids) if predicted else ()
        in_database = export.database_formats_rows()
        stored = predicted and in_database and catalogue_choices.stored_choices_current(survey_ids, candidates)
        if predicted and not stored:  # choosing per row: the candidates of the surveys the cone reaches only
            reached = set(selectors.survey_ids_in_cone(survey_ids, ra % 360.0, dec, sr))
            candidates = tuple((pk, found) for pk, found in candidates if pk in reached)
        if in_database:
            select = _rows_select(survey_names, candidates, verb, base, stored)
            where = selectors.cone_condition_sql(ra % 360.0, dec, sr, "t")
            count, body = export_sql.tabledata(select, _columns(verb), MAX_RECORDS, where, XML_SAFE)
        else:
            cone = selectors.galaxies_in_cone(ra % 360.0, dec, sr, selectors.galaxies_searchable_in(survey_ids))
            expressions = row_expressions(base, candidates, names, survey_names)
            hits = cone.annotate(**expressions["annotations"]).order_by("objid")
            rows = list(hits.values_list(*(expressions["cells"].get(n, F(n)) for n in names))[: MAX_RECORDS + 1])
            count, body = len(rows), writers.tabledata_rows(rows[:MAX_RECORDS])
    header, footer = _frame(verb, count > MAX_RECORDS)
    if datalink.ID_COLUMN in names:  # the rows' galaxies' links: the DataLink service descriptor
        footer = datalink.with_descriptor(footer, request.build_absolute_uri("/").rstrip("/"), datalink.ID_COLUMN)
    return HttpResponse(header + body + footer, content_type=CONTENT_TYPE)


def _columns(verb: int) -> tuple:
    return tuple(COLUMNS[n] for n in VERB_COLUMNS[verb])


@lru_cache(maxsize=256)
def _rows_select(
    survey_names: tuple[tuple[int, str], ...],
    candidates: selectors.SurveyCandidates,
    verb: int,
    base: str,
    stored: bool = False,
) -> tuple[str, tuple]:
    """The cone search's rows of the searchable galaxies of the surveys ``survey_names`` ((id, name) pairs;
    the cone added by the caller) as compiled SQL, kept: the ORM spent about 20 ms of a 0.5 deg cone's 70
    building it each time, and it depends on nothing but these arguments (the candidates change when a set
    is applied, the names when a survey is renamed, and so the key). ``stored``: read the catalogue's
    choice as stored (:mod:`catalogue.selectors.catalogue_choices`) instead of making it."""
    names = VERB_COLUMNS[verb]
    expressions = row_expressions(base, candidates, names, survey_names, stored)
    galaxies = selectors.galaxies_searchable_in(pk for pk, _ in survey_names).annotate(**expressions["annotations"])
    keep = ("healpix", "sky_x", "sky_y", "sky_z")
    return export_sql.tabledata_select(galaxies, _columns(verb), "objid", expressions["cells"], keep=keep)


def row_expressions(
    base: str,
    candidates: selectors.SurveyCandidates,
    names: list[str],
    survey_names: tuple[tuple[int, str], ...],
    stored: bool = False,
) -> dict:
    """SQL for the columns a galaxy row does not hold itself: its survey, its catalogue prediction, its
    links (under the site's address ``base``).

    The survey's name is written into the statement (``survey_names``: the surveys searched, as (id, name)):
    joined, PostgreSQL made that join after gathering its parallel workers' rows, and so its leader formatted
    every row. The prediction is the catalogue's M/L (:func:`catalogue.selectors.catalogue_ml_columns_of`, of
    the surveys' ``candidates``): a LEFT JOIN per candidate model on the (galaxy, model) index, in the same
    statement as the cone, and one to its g image (an EXISTS instead would be evaluated by the leader alone:
    PostgreSQL 15 runs no subplan in a parallel worker). With ``stored``, the prediction is the galaxy's
    stored choice instead (one LEFT JOIN; the caller has checked that it is current): the statement of a
    0.5 deg cone at 700,000 galaxies took 20 ms instead of 36 with it (the four joins and CASEs that choose).
    """
    survey_name = Case(*(When(survey_id=pk, then=Value(name)) for pk, name in survey_names), output_field=CharField())
    cells: dict = {"survey": survey_name if survey_names else Value(None, output_field=CharField())}
    if not set(PREDICTED) & set(names):
        return {"annotations": {}, "cells": cells}
    if stored:
        annotations: dict = {}
        cells.update(catalogue_choices.stored_choice_cells(candidates))
    else:
        predicted = selectors.catalogue_ml_columns_of(candidates)
        annotations = dict(predicted.relations)
        cells.update({name: predicted.cells[name] for name in CATALOGUE_ML})
    cells["galaxy_id"] = Cast("pk", CharField())
    cells["galaxy_url"] = Concat(Value(f"{base}/galaxies/"), Cast("pk", CharField()), Value("/"), output_field=CharField())
    annotations["scs_cutout"] = FilteredRelation("images", condition=Q(images__band="g", images__status=Image.Status.OK))
    # the app's own download of the cutout (/galaxies/<id>/g.fits), which streams it from any storage
    cells["cutout_g_url"] = Case(
        When(
            Q(scs_cutout__file__isnull=False) & ~Q(scs_cutout__file=""),
            then=Concat(Value(f"{base}/galaxies/"), Cast("pk", CharField()), Value("/g.fits"), output_field=CharField()),
        ),
        default=None,
        output_field=CharField(),
    )
    return {"annotations": annotations, "cells": cells}


@lru_cache(maxsize=2 * len(VERB_COLUMNS))
def _frame(verb: int, overflow: bool) -> tuple[bytes, bytes]:
    """The document around the rows for a verbosity, built once (astropy's unit checks cost 40 ms each time)."""
    document = VOTableFile()
    resource = Resource(type="results")
    document.resources.append(resource)
    if overflow:
        overflow_info = Info(name="QUERY_STATUS", value="OVERFLOW")
        overflow_info.content = f"only the first {MAX_RECORDS} rows; use a smaller SR"  # not a constructor argument
        resource.infos.append(overflow_info)
    table = TableElement(document, name="results")
    resource.tables.append(table)
    for name in VERB_COLUMNS[verb]:
        column = COLUMNS[name]
        field = Field(
            document,
            name=name,
            ID=name,
            datatype=DATATYPES[column.kind],
            unit=column.unit,
            ucd=UCDS.get(name, column.ucd or None),
            arraysize="*" if column.kind == "str" else None,
        )
        field.description = column.description
        table.fields.append(field)
    table.create_arrays(0)
    return writers.votable_frame(document)
