"""The home page, a survey's page, its footprint and its experiments."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from catalogue import selectors
from catalogue.services import writers
from catalogue.services.export import experiment_table
from pipeline.learning.named_models import CATALOGUE_MODEL
from pipeline.sky import MOC_ORDER, footprint_moc
from webui import figures

#: The finest footprint offered (13 arcsec cells).
MAX_MOC_ORDER = 14

EXPERIMENT_TITLES = {
    "single_band": "Single band: constant, Lg + z, g + morphology",
    "ablation": "Table 1: leaving out feature groups (g + morphology)",
    "colour": "Colour: g - i power law, g + i GBM, g + i + morphology",
    "losses": "Table B.1: methods optimised on each loss",
    "band_sets": "Fig. 8: sets of bands with and without morphology",
    "significance": "Significance of the gain from morphology (test split, and out-of-fold over train + validation)",
    "half_data": "Training on half the data",
    "colour_images": "Beyond the paper: CNN4 on the g image and g - i map (g + i + morphology, test galaxies with i images)",
}


def survey_or_404(name: str):
    survey = selectors.survey_named(name)
    if survey is None:
        raise Http404(f"no survey named {name!r}")
    return survey


def home(request: HttpRequest) -> HttpResponse:
    """Each survey with its galaxies, how many have a predicted M/L and from which set; the predicted M/L
    of the survey touched last (its targets where it has no predictions)."""
    surveys = list(selectors.surveys_with_counts())
    for survey in surveys:
        applied = selectors.applied_model_set(survey)
        survey.model_set = applied[0] if applied else None
        survey.n_predicted = selectors.predicted_count(survey) if applied else 0
    shown = max(surveys, key=lambda s: s.updated) if surveys else None  # the survey touched last
    active = selectors.active_runs()
    context = {
        "surveys": surveys,
        "runs": selectors.recent_runs()[:12],
        "active_runs": active,
        "shown_survey": shown,
        "figure": _home_figure(shown) if shown else "",
        "models": selectors.recent_regressors(),
        "refresh_seconds": 10 if active else 0,
    }
    return render(request, "webui/home.html", context)


def _home_figure(survey) -> tuple[str, str] | str:
    """(title, figure) for the home page: the survey's predicted M/L, else its targets, else nothing."""
    sample = selectors.catalogue_sample(survey, limit=5000)
    if sample is not None and len(sample.ml):
        return "Predicted M/L and M*", figures.predicted_distributions(sample.ml, sample.mstar, sample.flagged, "home-predicted")
    targets = selectors.targets_by_split(survey)
    return ("Target M/L per split", figures.ml_histogram(targets, div_id="ml-histogram")) if targets else ""


def survey_detail(request: HttpRequest, name: str) -> HttpResponse:
    survey = survey_or_404(name)
    applied = selectors.application_report(survey)
    if applied is not None and applied.catalogue_calibration:
        n = applied.catalogue_calibration.get("n")
        title = f"Interval calibration of {CATALOGUE_MODEL} on this survey ({n} learning-sample galaxies)"
        applied.coverage_figure = figures.calibration_plot(
            applied.catalogue_calibration, div_id="survey-calibration", title=title
        )
    targets = selectors.targets_by_split(survey)
    sample = selectors.catalogue_sample(survey)
    predicted = sample is not None and len(sample.ml) > 0
    context = {
        "survey": survey,
        "models": selectors.survey_models(survey),
        "histogram": figures.ml_histogram(targets) if targets else "",
        "sample": sample if predicted else None,
        "sampled": predicted and len(sample.ml) < sample.n_survey,
        "distributions": figures.predicted_distributions(sample.ml, sample.mstar, sample.flagged) if predicted else "",
        "relations": figures.predicted_relations(sample.lum_g, sample.ml, sample.g_minus_i, sample.morphology)
        if predicted
        else "",
        "share": figures.model_share(sample.ml_model) if predicted else "",
        "n_experiments": len(selectors.experiment_rows(latest_experiments(survey))),
        "runs": selectors.recent_runs(survey)[:10],
        "model_sets": selectors.model_sets(survey, limit=10),
        "applied": applied,
        "n_galaxies": selectors.survey_count(survey),
    }
    return render(request, "webui/survey.html", context)


def latest_experiments(survey):
    return selectors.latest_product_run(survey, "experiment_results")


def survey_moc(request: HttpRequest, name: str) -> HttpResponse:
    """The survey's footprint as an IVOA MOC in FITS: the HEALPix cells (``?order=``, 0-14) holding its galaxies."""
    survey = survey_or_404(name)
    raw = request.GET.get("order", str(MOC_ORDER))
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_MOC_ORDER:
        return HttpResponse(
            f"order must be an integer from 0 to {MAX_MOC_ORDER}, got {raw!r}\n", status=400, content_type="text/plain"
        )
    ra_dec = selectors.positions(survey)  # a missing position is NaN, left out
    try:
        moc = footprint_moc(ra_dec[:, 0], ra_dec[:, 1], int(raw))
    except ValueError as exc:
        raise Http404(f"survey {survey.name} has no galaxy with a position: {exc}") from None
    response = HttpResponse(writers.moc_fits(moc), content_type="application/fits")
    response["Content-Disposition"] = f'attachment; filename="{survey.name}-moc.fits"'
    return response


def experiments(request: HttpRequest, name: str) -> HttpResponse:
    """The survey's latest experiments: Table 1, Table B.1, Fig. 8 and the significance tests."""
    survey = survey_or_404(name)
    run = latest_experiments(survey)
    tables: dict[str, list] = {}
    for row in selectors.experiment_rows(run):
        tables.setdefault(row.experiment, []).append(row)
    band_rows = [
        {
            "bands": r.details.get("bands"),
            "morphology": r.details.get("morphology"),
            "colour_images": r.details.get("colour_images", False),
            "l1": r.l1,
        }
        for r in tables.get("band_sets", [])
    ]
    model = selectors.latest_named_model(survey, CATALOGUE_MODEL)
    calibration = (model.metrics or {}).get("calibration", {}) if model else {}
    context = {
        "survey": survey,
        "run": run,
        "tables": tables,
        "titles": EXPERIMENT_TITLES,
        "band_figure": figures.band_set_bars(band_rows) if band_rows else "",
        "interval_note": calibration.get("description") or calibration.get("method", ""),
    }
    return render(request, "webui/experiments.html", context)


def experiments_csv(request: HttpRequest, name: str) -> HttpResponse:  # noqa: ARG001 - Django's signature
    """Every row of the survey's latest experiments as CSV."""
    survey = survey_or_404(name)
    table = experiment_table(selectors.experiment_rows(latest_experiments(survey)))
    response = HttpResponse(writers.table_bytes(table, "csv"), content_type=writers.CONTENT_TYPES["csv"])
    response["Content-Disposition"] = f'attachment; filename="morphomass-{survey.name}-experiments.csv"'
    return response
