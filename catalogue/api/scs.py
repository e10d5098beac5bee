"""IVOA Simple Cone Search 1.03: /scs/?RA=&DEC=&SR=[&VERB=1|2|3][&SURVEY=name].

Answers a VOTable whose first three columns carry the UCDs the standard requires
(ID_MAIN, POS_EQ_RA_MAIN, POS_EQ_DEC_MAIN), then the galaxy's survey (one objid can be in
several); VERB chooses how many columns follow: from VERB=2 on, the current predictions
(g_morph of the model set applied to the galaxy's survey last: M/L, its 68% interval, M*
and the out-of-selection flag, with units and UCDs) and links to the galaxy's page and g
cutout. A bad request is answered, as the standard says, with HTTP 200 and a VOTable
holding one INFO named "Error" that says what was wrong; the API's throttles apply, and a
throttled request gets 429 with Retry-After and the same kind of VOTable.
"""

from __future__ import annotations

import io
from functools import lru_cache, reduce
from operator import or_

from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from django.conf import settings
from django.db.models import Case, CharField, F, FilteredRelation, FloatField, IntegerField, Q, Value, When
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from catalogue.api.vo_refusals import refusal
from catalogue.columns import GALAXY_COLUMNS, PREDICTION_COLUMNS, SERVICE_COLUMNS
from catalogue.models import Galaxy, Image, Survey
from catalogue.selectors import galaxies_in_cone, prediction_model
from catalogue.services import export, export_sql

MAX_SR_DEG = 10.0
MAX_RECORDS = 100_000
#: Columns per verbosity; the first three carry the standard's UCDs.
#: The current predictions and links a row carries from VERB=2 on.
PREDICTED = ["model_set", "ml_pred", "ml_lo68", "ml_hi68", "mstar_pred", "out_of_support", "galaxy_url", "cutout_g_url"]
VERB_COLUMNS = {
    1: ["objid", "ra", "dec", "survey"],
    2: ["objid", "ra", "dec", "survey", "z", "mag_g", "mag_i", "lum_g", "ml_g", "ml_g_err", "split", "morphology", *PREDICTED],
    3: ["objid", "ra", "dec", "survey", *(c.name for c in GALAXY_COLUMNS[3:]), *PREDICTED],
}
#: The model whose predictions a row carries: the paper's main model.
CURRENT_MODEL = "g_morph"
#: The UCD1 words SCS 1.03 requires of its main columns.
UCDS = {"objid": "ID_MAIN", "ra": "POS_EQ_RA_MAIN", "dec": "POS_EQ_DEC_MAIN", "z": "REDSHIFT_HC"}
COLUMNS = {c.name: c for c in GALAXY_COLUMNS + PREDICTION_COLUMNS + SERVICE_COLUMNS}
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
        surveys = Survey.objects.all()
        if request.GET.get("SURVEY"):
            surveys = surveys.filter(name=request.GET["SURVEY"])
            if not surveys.exists():
                raise ValueError(f"SURVEY={request.GET['SURVEY']!r}: no survey of that name")
    except ValueError as exc:
        return error(str(exc))
    queryset = Galaxy.objects.exclude(status="rejected")
    if request.GET.get("SURVEY"):
        queryset = queryset.filter(survey__in=surveys)
    names = VERB_COLUMNS[verb]
    count, body = 0, b""
    if sr > 0:
        cone = galaxies_in_cone(ra % 360.0, dec, sr, queryset)
        # the current model of the surveys the cone reaches only, not of every survey
        reached = Survey.objects.filter(pk__in=cone.values("survey_id").distinct())
        expressions = row_expressions(request, list(reached) if set(PREDICTED) & set(names) else [], names)
        hits = cone.annotate(**expressions["annotations"]).order_by("objid")
        columns = tuple(COLUMNS[n] for n in names)
        if export.database_formats_rows():
            count, text = export_sql.tabledata(hits, columns, MAX_RECORDS, order="objid", expressions=expressions["cells"])
            body = text.encode()
        else:
            rows = list(hits.values_list(*(expressions["cells"].get(n, F(n)) for n in names))[: MAX_RECORDS + 1])
            count, body = len(rows), export.tabledata_rows(rows[:MAX_RECORDS])
    header, footer = _frame(verb, count > MAX_RECORDS)
    return HttpResponse(header + body + footer, content_type=CONTENT_TYPE)


def row_expressions(request: HttpRequest, surveys: list[Survey], names: list[str]) -> dict:
    """SQL for the columns a galaxy row does not hold itself: its survey, its current predictions, its links.

    Each survey's current predictions are those of its :data:`CURRENT_MODEL` in the model set
    applied to it last (a survey not predicted yet has none): one LEFT JOIN on the
    (galaxy, model) index, in the same statement as the cone, and one to its g image.
    """
    annotations: dict = {}
    cells: dict = {"survey": F("survey__name")}
    if not set(PREDICTED) & set(names):
        return {"annotations": annotations, "cells": cells}
    current = {}
    for survey in surveys:
        try:
            model = prediction_model(survey, CURRENT_MODEL)
        except ValueError:
            continue
        current[survey.pk] = (model.pk, model.model_set.name if model.model_set_id else f"{survey.name} (model #{model.pk})")
    cells["model_set"] = Case(
        *(When(survey_id=s, then=Value(name)) for s, (_, name) in current.items()), default=None, output_field=CharField()
    )
    if current:
        # One LEFT JOIN to each galaxy's prediction by its survey's current model.
        condition = reduce(or_, (Q(survey_id=s) & Q(predictions__model_id=m) for s, (m, _) in current.items()))
        annotations["scs_prediction"] = FilteredRelation("predictions", condition=condition)
        for name in ("ml_pred", "ml_lo68", "ml_hi68", "mstar_pred"):
            cells[name] = F(f"scs_prediction__{name}")
        cells["out_of_support"] = Case(
            When(scs_prediction__out_of_support=True, then=Value(1)),
            When(scs_prediction__out_of_support=False, then=Value(0)),
            default=None,
            output_field=IntegerField(),
        )
    else:
        for name in ("ml_pred", "ml_lo68", "ml_hi68", "mstar_pred"):
            cells[name] = Value(None, output_field=FloatField())
        cells["out_of_support"] = Value(None, output_field=IntegerField())
    base = request.build_absolute_uri("/").rstrip("/")
    cells["galaxy_url"] = Concat(Value(f"{base}/galaxies/"), Cast("pk", CharField()), Value("/"), output_field=CharField())
    annotations["scs_cutout"] = FilteredRelation("images", condition=Q(images__band="g", images__status=Image.Status.OK))
    media = request.build_absolute_uri("/" + settings.MEDIA_URL.lstrip("/"))
    cells["cutout_g_url"] = Case(
        When(
            Q(scs_cutout__file__isnull=False) & ~Q(scs_cutout__file=""),
            then=Concat(Value(media), F("scs_cutout__file"), output_field=CharField()),
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
    return export.votable_frame(document)
