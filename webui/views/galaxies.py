"""The catalogue browser, a galaxy's page and its pictures."""

from __future__ import annotations

import numpy as np
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from rest_framework.exceptions import ValidationError

from catalogue import selectors
from catalogue.api.filters import GalaxyFilter
from catalogue.columns import ORDERABLE_COLUMNS, column
from catalogue.services.export import FORMATS
from catalogue.services.image_store import stored_resolutions
from catalogue.services.pictures import colour_map, galaxy_png
from pipeline import gz2
from pipeline.images.preprocess import FEATURE_UNITS
from webui import figures
from webui.cells import DASH, described, format_cell, interval

#: The catalogue browser's columns, and the galaxy page's fields.
GALAXY_COLUMNS = described("objid", "ra", "dec", "z", "d25_arcmin", "mag_g", "lum_g", "ml_g", "ml_g_err", "split", "status")
GALAXY_FIELDS = described("ra", "dec", "z", "d25_arcmin", "mag_g", "lum_g", "ml_g", "ml_g_err", "mag_i", "lum_dist_mpc", "chi2_r")
#: The browser's sortable columns.
SORTABLE = set(ORDERABLE_COLUMNS)
#: Rows per page of the browser.
PAGE_ROWS = 50


def galaxy_or_404(pk: int):
    galaxy = selectors.galaxy_by_id(pk)
    if galaxy is None:
        raise Http404(f"no galaxy #{pk}")
    return galaxy


def catalogue_browser(request: HttpRequest) -> HttpResponse:
    """The catalogue table with the API's filters, a cone form, sorting, pages and downloads."""
    params = request.GET.copy()
    params.pop("page", None)
    for name in [name for name, values in params.lists() if not any(values)]:
        params.pop(name)  # the form submits its empty fields; the filters want them left out
    ordering = params.get("ordering", "objid")
    if ordering.lstrip("-") not in SORTABLE:
        ordering = "objid"
    filterset = GalaxyFilter(params, queryset=selectors.galaxies_with_survey())
    error, rows, page, model = "", [], None, None
    try:
        if not filterset.is_valid():
            raise ValueError("; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items()))
        model = filterset.prediction_model
        page = Paginator(filterset.qs.order_by(ordering, "id"), PAGE_ROWS).get_page(request.GET.get("page"))
        for galaxy in page:
            cells = [format_cell(getattr(galaxy, c)) for c, _, _ in GALAXY_COLUMNS]
            if model is not None:
                cells.append(format_cell(getattr(galaxy, "ml_pred", None)))
            rows.append((galaxy.pk, galaxy.survey.name, cells))
    except (ValueError, ValidationError) as exc:  # a bad filter is explained, not a 500
        error, model = _explain(exc), None
    predicted = column("ml_pred")
    columns = list(GALAXY_COLUMNS) + ([(predicted.name, f"{predicted.heading} ({model.name})", predicted.unit)] if model else [])
    context = {
        "form": filterset.form,
        "columns": columns,
        "rows": rows,
        "page": page,
        "error": error,
        "ordering": ordering,
        "query": params.urlencode(),
        "query_without_ordering": _without(params, "ordering"),
        "sortable": SORTABLE,
        "formats": FORMATS,
    }
    return render(request, "webui/catalogue.html", context)


def _explain(exc: Exception) -> str:
    """A filter error as a sentence: 'field: reason' for each field."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in detail.items())
    return str(exc)


def _without(params, key: str) -> str:
    params = params.copy()
    params.pop(key, None)
    return params.urlencode()


def galaxy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    galaxy = galaxy_or_404(pk)
    pre = getattr(galaxy, "preprocessed", None)
    features, resolutions = [], []
    if pre is not None and pre.status == "ok":
        features = [(name, format_cell(pre.features.get(name)), unit) for name, unit in FEATURE_UNITS.items()]
        resolutions = [(r, f"log{r}") for r in stored_resolutions(galaxy)]
    votes = getattr(galaxy, "gz2", None)
    volunteers = None if votes is None else votes.probabilities
    predicted = selectors.predicted_gz2(galaxy)
    latest = selectors.latest_prediction_per_model(galaxy)
    colours = colour_map(galaxy)
    context = {
        "galaxy": galaxy,
        "fields": [(label, format_cell(getattr(galaxy, name)), unit) for name, label, unit in GALAXY_FIELDS],
        "pre": pre,
        "features": features,
        "resolutions": resolutions,
        "has_image": selectors.has_usable_image(galaxy),
        "top_answers": _top_answers(volunteers, predicted),
        "has_prediction": predicted is not None,
        "prediction_rows": [_prediction_row(p, galaxy.ml_g) for p in latest.values()],
        "prediction_figure": _prediction_figure(galaxy, latest) if latest else "",
        "gz2_figure": figures.gz2_bars(volunteers, predicted) if volunteers is not None or predicted is not None else "",
        "colour_figure": figures.colour_map(colours) if colours is not None else "",
        "catalogue_colour": galaxy.mag_g - galaxy.mag_i if galaxy.mag_g is not None and galaxy.mag_i is not None else None,
    }
    return render(request, "webui/galaxy.html", context)


def _top_answers(volunteers, predicted) -> list[tuple[str, str, str]]:
    """The eight GZ2 answers most voted (or, without votes, most predicted), with both probabilities."""
    if volunteers is None and predicted is None:
        return []
    ranking = volunteers if volunteers is not None else predicted
    return [
        (
            gz2.short_name(gz2.ANSWER_IDS[i]),
            DASH if volunteers is None else f"{volunteers[i]:.2f}",
            DASH if predicted is None else f"{predicted[i]:.2f}",
        )
        for i in np.argsort(ranking)[::-1][:8]
    ]


def _prediction_row(p, target: float | None) -> tuple:
    return (
        p.model,
        format_cell(p.ml_pred),
        interval(p.ml_lo68, p.ml_hi68),
        format_cell(p.mstar_pred),
        interval(p.mstar_lo68, p.mstar_hi68),
        format_cell(float(np.log10(p.ml_pred / target))) if target else DASH,
        "; ".join(p.support_reasons),
    )


def _prediction_figure(galaxy, latest: dict) -> str:
    chosen = list(latest.values())
    return figures.predictions_against_target(
        list(latest),
        [p.ml_pred for p in chosen],
        galaxy.ml_g,
        galaxy.ml_g_err,
        [p.ml_lo68 for p in chosen],
        [p.ml_hi68 for p in chosen],
    )


@cache_control(max_age=3600)
def galaxy_image(request: HttpRequest, pk: int, stage: str) -> HttpResponse:  # noqa: ARG001 - Django's signature
    """PNG of a galaxy at one preprocessing stage: 'g' (the cutout), 'clean' (stars removed) or 'log<res>' (network input)."""
    try:
        return HttpResponse(galaxy_png(galaxy_or_404(pk), stage), content_type="image/png")
    except LookupError as exc:
        raise Http404(str(exc)) from None
