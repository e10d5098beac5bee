"""Server-rendered pages: thin views over catalogue selectors."""

from __future__ import annotations

import numpy as np
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import cache_control

from catalogue.models import Galaxy, Run, Survey
from catalogue.selectors import predicted_gz2
from catalogue.services.cutouts import read_cutout, usable_image
from catalogue.services.image_store import load_log_images, stored_resolutions
from pipeline import gz2, units
from pipeline.display import asinh_display, linear_display, png_bytes
from pipeline.preprocess import FEATURE_UNITS

GALAXY_COLUMNS = [
    ("objid", "objid", ""),
    ("ra", "RA", "deg"),
    ("dec", "Dec", "deg"),
    ("z", "z", ""),
    ("d25_arcmin", "D25", "arcmin"),
    ("mag_g", "g", "AB mag"),
    ("lum_g", "L_g", units.LUMINOSITY),
    ("ml_g", "M/L_g", units.MASS_TO_LIGHT),
    ("ml_g_err", "error", units.MASS_TO_LIGHT),
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
    runs = list(Run.objects.select_related("survey")[:10])
    active = any(r.is_active for r in runs)
    return render(request, "webui/home.html", {"surveys": surveys, "runs": runs, "refresh_seconds": 5 if active else 0})


def survey_detail(request: HttpRequest, name: str) -> HttpResponse:
    survey = get_object_or_404(Survey, name=name)
    galaxies = Galaxy.objects.filter(survey=survey).order_by("objid").values_list("id", *[c for c, _, _ in GALAXY_COLUMNS])
    page = Paginator(galaxies, 50).get_page(request.GET.get("page"))
    rows = [(row[0], [format_cell(v) for v in row[1:]]) for row in page]
    return render(
        request,
        "webui/survey.html",
        {"survey": survey, "columns": GALAXY_COLUMNS, "page": page, "rows": rows},
    )


GALAXY_FIELDS = [
    *GALAXY_COLUMNS[1:8],
    ("ml_g_err", "M/L_g error", units.MASS_TO_LIGHT),
    ("mag_i", "i", "AB mag"),
    ("lum_dist_mpc", "luminosity distance", "Mpc"),
    ("chi2_r", "SED fit reduced chi2", ""),
]


def galaxy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    galaxy = get_object_or_404(Galaxy.objects.select_related("survey"), pk=pk)
    fields = [(label, format_cell(getattr(galaxy, name)), unit) for name, label, unit in GALAXY_FIELDS]
    pre = getattr(galaxy, "preprocessed", None)
    features = []
    resolutions = []
    if pre is not None and pre.status == "ok":
        features = [(name, format_cell(pre.features.get(name)), unit) for name, unit in FEATURE_UNITS.items()]
        resolutions = [(r, f"log{r}") for r in stored_resolutions(galaxy)]
    votes = getattr(galaxy, "gz2", None)
    predicted = predicted_gz2(galaxy)
    top_answers = []
    if votes is not None or predicted is not None:
        ranking = votes.probabilities if votes is not None else predicted
        order = np.argsort(ranking)[::-1][:8]
        top_answers = [
            (gz2.short_name(gz2.ANSWER_IDS[i]),
             "\u2013" if votes is None else f"{votes.probabilities[i]:.2f}",
             "\u2013" if predicted is None else f"{predicted[i]:.2f}")
            for i in order
        ]  # fmt: skip
    return render(request, "webui/galaxy.html", {
        "galaxy": galaxy, "fields": fields, "pre": pre, "features": features, "resolutions": resolutions,
        "has_image": galaxy.images.filter(band="g", status="ok").exists(), "top_answers": top_answers,
        "has_prediction": predicted is not None,
    })  # fmt: skip


@cache_control(max_age=3600)
def galaxy_image(request: HttpRequest, pk: int, stage: str) -> HttpResponse:
    """PNG of a galaxy at one preprocessing stage: 'g' (the cutout) or 'log<res>' (network input)."""
    galaxy = get_object_or_404(Galaxy, pk=pk)
    if stage == "g":
        image = usable_image(galaxy)
        if image is None:
            raise Http404("no usable g image")
        _, data = read_cutout(image)
        return HttpResponse(png_bytes(asinh_display(data), size=256), content_type="image/png")
    if stage.startswith("log") and stage[3:].isdigit():
        if int(stage[3:]) not in stored_resolutions(galaxy):
            raise Http404("not preprocessed at that resolution")
        picture = linear_display(load_log_images([galaxy], int(stage[3:]))[0])
        return HttpResponse(png_bytes(picture, size=256), content_type="image/png")
    raise Http404(f"unknown stage {stage!r}")
