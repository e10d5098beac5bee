"""The catalogue browser, a galaxy's page and its pictures."""

from __future__ import annotations

import numpy as np
from django.core.paginator import Paginator
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from rest_framework.exceptions import ValidationError

from catalogue import selectors
from catalogue.api.downloads import stored_file
from catalogue.api.filters import GalaxyFilter
from catalogue.columns import CATALOGUE_ML_FIELDS, ORDERABLE_COLUMNS, column
from catalogue.services.export import FORMATS
from catalogue.services.image_store import stored_resolutions
from catalogue.services.pictures import colour_map, galaxy_png
from pipeline import gz2
from pipeline.images.preprocess import FEATURE_UNITS
from webui import figures
from webui.cells import DASH, described, format_cell, interval

#: The catalogue browser's columns of the galaxy itself, the catalogue's M/L beside them, and the
#: target columns shown where the rows have targets; the galaxy page's fields.
GALAXY_COLUMNS = described("objid", "ra", "dec", "z", "mag_g", "lum_g")
PREDICTED_COLUMNS = described("ml", "ml_lo68", "mstar", "ml_model", "out_of_support")
TARGET_COLUMNS = described("ml_g", "ml_g_err")
GALAXY_FIELDS = described("ra", "dec", "z", "d25_arcmin", "mag_g", "lum_g", "ml_g", "ml_g_err", "mag_i", "lum_dist_mpc", "chi2_r")
#: The browser's sortable columns: the indexed ones and the catalogue's predictions.
SORTABLE = {*ORDERABLE_COLUMNS, "ml", "mstar"}
#: Rows per page of the browser.
PAGE_ROWS = 50
#: Filters the browser's form does not show: it always shows the catalogue's M/L, the headings sort, and
#: the learning sample's split and status belong to the survey's training view (the URL still takes them).
HIDDEN_FILTERS = ("ordering", "catalogue_ml", "split", "status")


def galaxy_or_404(pk: int):
    galaxy = selectors.galaxy_by_id(pk)
    if galaxy is None:
        raise Http404(f"no galaxy #{pk}")
    return galaxy


def catalogue_browser(request: HttpRequest) -> HttpResponse:
    """The catalogue table: each galaxy's predicted M/L first, with the API's filters, a cone form, sorting, pages
    and downloads; the targets beside the predictions where the rows have them."""
    params = request.GET.copy()
    params.pop("page", None)
    params.pop("catalogue_ml", None)  # the browser always shows the catalogue's M/L
    for name in [name for name, values in params.lists() if not any(values)]:
        params.pop(name)  # the form submits its empty fields; the filters want them left out
    ordering = params.get("ordering", "objid")
    if ordering.lstrip("-") not in SORTABLE:
        ordering = "objid"
    filters = params.copy()
    filters.pop("ordering", None)  # the headings sort, by the predictions too (the API orders by indexed columns only)
    filterset = GalaxyFilter(filters, queryset=selectors.galaxies_with_survey())
    error, rows, page, model, columns, note = "", [], None, None, [], ""
    try:
        if not filterset.is_valid():
            raise ValueError("; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items()))
        model, survey = filterset.prediction_model, filterset.survey_object
        found = filterset.qs
        if model is None:  # the filters joined the catalogue's M/L
            catalogue, named = filterset.prediction_columns[0], None
        else:  # they joined the named model's predictions: the catalogue's M/L still leads the row
            catalogue, named = (
                selectors.catalogue_ml_columns([survey] if survey else selectors.every_survey()),
                filterset.prediction_columns[0],
            )
            found = catalogue.annotate(found)
        page = Paginator(found.order_by(_order(ordering, catalogue), "id"), PAGE_ROWS).get_page(request.GET.get("page"))
        galaxies = list(page)
        with_targets = any(g.ml_g is not None for g in galaxies)
        columns = GALAXY_COLUMNS + _predicted_columns(model) + (TARGET_COLUMNS + [RESIDUAL] if with_targets else [])
        rows = [(g.pk, g.survey.name, _cells(g, catalogue, named, with_targets)) for g in galaxies]
        if survey is not None and not selectors.catalogue_candidates(survey):
            note = (
                f"Survey {survey.name} has no predictions yet: apply a model set to it "
                f"(run_pipeline --survey {survey.name} --models <training survey>)."
            )
    except (ValueError, ValidationError) as exc:  # a bad filter is explained, not a 500
        error, model = _explain(exc), None
    context = {
        "form": filterset.form,
        "hidden_filters": HIDDEN_FILTERS,
        "columns": columns,
        "rows": rows,
        "page": page,
        "error": error,
        "note": note,
        "ordering": ordering,
        "query": params.urlencode(),
        "query_without_ordering": _without(params, "ordering"),
        "sortable": SORTABLE,
        "formats": FORMATS,
    }
    return render(request, "webui/catalogue.html", context)


#: The residual column: how far the catalogue's M/L lies from the target.
RESIDUAL = ("residual", "log(M/L / target)", "dex")


def _order(ordering: str, catalogue):
    """The ORDER BY of a heading: a galaxy column, or the catalogue's prediction (``ml``, ``mstar``;
    galaxies without one last either way)."""
    name = ordering.lstrip("-")
    if name not in ("ml", "mstar"):
        return ordering
    value = F(catalogue.attribute(name))
    return value.desc(nulls_last=True) if ordering.startswith("-") else value.asc(nulls_last=True)


def _predicted_columns(model) -> list[tuple[str, str, str]]:
    """The catalogue's M/L headings; with a named model, that model's prediction after them."""
    headings = [(key, "M/L 68%" if key == "ml_lo68" else label, unit) for key, label, unit in PREDICTED_COLUMNS]
    if model is None:
        return headings
    predicted = column("ml_pred")
    return headings + [(predicted.name, f"{predicted.heading} ({model.name})", predicted.unit)]


def _cells(galaxy, catalogue, named, with_targets: bool) -> list[tuple[str, str, str]]:
    """A row's (column, text, title) cells in the order of the browser's headings; a flagged galaxy's
    reasons are its flag's title, so that a long reason does not stretch the row."""
    values = catalogue.values(galaxy)
    cells = [(key, format_cell(getattr(galaxy, key)), "") for key, _, _ in GALAXY_COLUMNS]
    cells += [
        ("ml", format_cell(values["ml"]), ""),
        ("ml_lo68", interval(values["ml_lo68"], values["ml_hi68"]), ""),
        ("mstar", format_cell(values["mstar"]), ""),
        ("ml_model", values["ml_model"] or DASH, ""),
        ("out_of_support", _flag_text(values["out_of_support"]), "; ".join(values["support_reasons"] or [])),
    ]
    if named is not None:
        cells.append(("ml_pred", format_cell(named.values(galaxy)["ml_pred"]), ""))
    if with_targets:
        target, ml = galaxy.ml_g, values["ml"]
        cells += [("ml_g", format_cell(target), ""), ("ml_g_err", format_cell(galaxy.ml_g_err), "")]
        cells.append(("residual", format_cell(float(np.log10(ml / target))) if ml and target else DASH, ""))
    return cells


def _flag_text(flagged: int | None) -> str:
    """'flagged' for a galaxy outside its model's training selection, 'no' inside it, a dash unpredicted."""
    if flagged is None:
        return DASH
    return "flagged" if flagged else "no"


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
    galaxy = selectors.galaxy_with_catalogue_ml(galaxy_or_404(pk))
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
        "catalogue_ml": _catalogue_ml_line(galaxy),
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


def _catalogue_ml_line(galaxy) -> dict | None:
    """The galaxy's catalogue M/L for the page's first line (None unpredicted)."""
    values = {name: getattr(galaxy, f"{selectors.CATALOGUE_PREFIX}{name}") for name in CATALOGUE_ML_FIELDS}
    if values["ml"] is None:
        return None
    return {
        "ml": format_cell(values["ml"]),
        "ml68": interval(values["ml_lo68"], values["ml_hi68"]),
        "ml95": interval(values["ml_lo95"], values["ml_hi95"]),
        "mstar": f"{values['mstar']:.3e}" if values["mstar"] else DASH,
        "mstar68": interval(values["mstar_lo68"], values["mstar_hi68"]),
        "model": values["ml_model"],
        "model_set": values["ml_model_set"],
        "flagged": "; ".join(values["support_reasons"] or []) or "yes" if values["out_of_support"] else "",
    }


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


def galaxy_fits(request: HttpRequest, pk: int, band: str) -> HttpResponse:  # noqa: ARG001 - Django's signature
    """A galaxy's FITS cutout in one band, from the media storage (DataLink's #this and #counterpart)."""
    galaxy = galaxy_or_404(pk)
    image = selectors.cutout(galaxy, band)
    if image is None:
        raise Http404(f"galaxy #{pk} has no {band}-band cutout")
    name = f"{galaxy.survey.name}_{galaxy.objid}_{band}.fits"
    return stored_file(image.file, "application/fits", name)


@cache_control(max_age=3600)
def galaxy_image(request: HttpRequest, pk: int, stage: str) -> HttpResponse:  # noqa: ARG001 - Django's signature
    """PNG of a galaxy at one preprocessing stage: 'g' (the cutout), 'clean' (stars removed) or 'log<res>' (network input)."""
    try:
        return HttpResponse(galaxy_png(galaxy_or_404(pk), stage), content_type="image/png")
    except LookupError as exc:
        raise Http404(str(exc)) from None
