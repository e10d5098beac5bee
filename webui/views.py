"""Server-rendered pages: thin views over catalogue selectors."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from catalogue.models import Galaxy, Survey, TrainingRun

GALAXY_COLUMNS = [
    ("objid", "objid", ""),
    ("ra", "RA", "deg"),
    ("dec", "Dec", "deg"),
    ("z", "z", ""),
    ("d25_arcmin", "D25", "arcmin"),
    ("mag_g", "g", "AB mag"),
    ("lum_g", "L_g", "Lsun,g"),
    ("ml_g", "M/L_g", "Msun/Lsun,g"),
    ("ml_g_err", "error", "Msun/Lsun,g"),
    ("split", "split", ""),
    ("status", "status", ""),
]


def format_cell(value: object) -> str:
    """Show floats with 4 significant digits, missing values as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def home(request: HttpRequest) -> HttpResponse:
    surveys = Survey.objects.annotate(
        n_galaxies=Count("galaxies"),
        n_ok=Count("galaxies", filter=Q(galaxies__status="ok")),
        n_rejected=Count("galaxies", filter=Q(galaxies__status="rejected")),
    ).order_by("name")
    runs = TrainingRun.objects.select_related("survey")[:10]
    return render(request, "webui/home.html", {"surveys": surveys, "runs": runs})


def survey_detail(request: HttpRequest, name: str) -> HttpResponse:
    survey = get_object_or_404(Survey, name=name)
    galaxies = Galaxy.objects.filter(survey=survey).order_by("objid").values_list(*[c for c, _, _ in GALAXY_COLUMNS])
    page = Paginator(galaxies, 50).get_page(request.GET.get("page"))
    rows = [[format_cell(v) for v in row] for row in page]
    return render(
        request,
        "webui/survey.html",
        {"survey": survey, "columns": GALAXY_COLUMNS, "page": page, "rows": rows},
    )
