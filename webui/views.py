"""Server-rendered pages: thin views over catalogue selectors."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import ensure_csrf_cookie
from rest_framework.exceptions import ValidationError

from catalogue import selectors
from catalogue.columns import ORDERABLE_COLUMNS, column
from catalogue.models import ExperimentResult, Galaxy, ImageStore, ModelSet, Prediction, Run, RunStage, Survey, TrainedModel
from catalogue.selectors import latest_succeeded_run, predicted_gz2
from catalogue.services.cutouts import cutout_for_preprocessing, read_cutout, usable_image
from catalogue.services.export import FORMATS
from catalogue.services.image_store import load_log_images, stored_resolutions
from catalogue.services.model_sets import applied_model_set
from pipeline import gz2
from pipeline.display import asinh_display, linear_display, mark_points, png_bytes
from pipeline.metrics import l1_per_galaxy
from pipeline.preprocess import FEATURE_UNITS, central_square, remove_stars
from pipeline.regression import NAMED_MODELS
from webui import figures


def _described(*names: str) -> list[tuple[str, str, str]]:
    """(name, heading, unit) of catalogue columns, from their one description."""
    return [(c.name, c.heading, c.unit or "") for c in map(column, names)]


#: The catalogue browser's columns, and the galaxy page's fields.
GALAXY_COLUMNS = _described("objid", "ra", "dec", "z", "d25_arcmin", "mag_g", "lum_g", "ml_g", "ml_g_err", "split", "status")
GALAXY_FIELDS = _described(
    "ra", "dec", "z", "d25_arcmin", "mag_g", "lum_g", "ml_g", "ml_g_err", "mag_i", "lum_dist_mpc", "chi2_r"
)


def format_cell(value: object) -> str:
    """Show floats with 4 significant digits, missing values as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def home(request: HttpRequest) -> HttpResponse:
    surveys = list(selectors.surveys_with_counts())
    shown = max(surveys, key=lambda s: s.updated) if surveys else None  # the survey touched last
    histogram = figures.ml_histogram(selectors.targets_by_split(shown), div_id="ml-histogram") if shown else ""
    models = TrainedModel.objects.filter(kind__in=["gbm", "baseline"]).select_related("survey")[:12]
    runs = Run.objects.select_related("survey")
    active = list(runs.filter(status__in=Run.ACTIVE))
    return render(
        request,
        "webui/home.html",
        {
            "surveys": surveys,
            "runs": runs[:12],
            "active_runs": active,
            "histogram": histogram,
            "shown_survey": shown,
            "models": models,
            "refresh_seconds": 10 if active else 0,
        },
    )


def survey_detail(request: HttpRequest, name: str) -> HttpResponse:
    survey = get_object_or_404(Survey, name=name)
    models = TrainedModel.objects.filter(survey=survey).order_by("-created")[:30]
    applied = applied_model_set(survey)
    return render(
        request,
        "webui/survey.html",
        {
            "survey": survey,
            "models": models,
            "histogram": figures.ml_histogram(selectors.targets_by_split(survey)),
            "n_experiments": ExperimentResult.objects.filter(survey=survey).count(),
            "runs": Run.objects.filter(survey=survey).order_by("-created")[:10],
            "model_sets": ModelSet.objects.filter(survey=survey)[:10],
            "applied": _application(survey, *applied) if applied else None,
            "n_galaxies": Galaxy.objects.filter(survey=survey).count(),
        },
    )


def _application(survey: Survey, model_set: ModelSet, run: Run) -> dict:
    """Which set predicted the survey's catalogue, how many galaxies each model flags, what it skipped."""
    flagged = dict(
        Prediction.objects.filter(model__model_set=model_set, galaxy__survey=survey, out_of_support=True)
        .values_list("model__name")
        .annotate(n=Count("id"))
    )
    any_flagged = (
        Galaxy.objects.filter(survey=survey, predictions__model__model_set=model_set, predictions__out_of_support=True)
        .distinct()
        .count()
    )
    predicted = [name for name in run.config.get("models", {}) if name not in run.result.get("skipped", {})]
    coverage = run.result.get("calibration") or {}
    classes = list(dict.fromkeys(c for report in coverage.values() if report for c in report.get("by_class", {}) if c))
    return {
        "classes": [(c, max(r.get("by_class", {}).get(c, {}).get("n", 0) for r in coverage.values() if r)) for c in classes],
        "coverage_by_class": [
            (name, [report.get("by_class", {}).get(c, {}).get("coverage_68") for c in classes])
            for name, report in coverage.items()
            if report
        ],
        "coverage": [
            (name, report.get("n"), report.get("coverage_68"), report.get("coverage_95"), report.get("width_68_dex"))
            for name, report in coverage.items()
            if report
        ],
        "coverage_figure": figures.calibration_plot(
            coverage["g_morph"],
            div_id="survey-calibration",
            title=f"Interval calibration of g_morph on this survey ({coverage['g_morph'].get('n')} learning-sample galaxies)",
        )
        if coverage.get("g_morph")
        else "",
        "model_set": model_set,
        "run": run,
        "flagged": [(name, flagged.get(name, 0)) for name in predicted],
        "any_flagged": any_flagged,
        "skipped": sorted(run.result.get("skipped", {}).items()),
        "foreign": model_set.survey_id != survey.pk,
    }


#: Rows of the model-set comparison: (label, unit, how to read it from a set's summary).
SET_METRICS = (("test L1", "", ("test", "l1")), ("68% coverage (test)", "", ("coverage_68",)))


def model_sets(request: HttpRequest) -> HttpResponse:
    """Model sets side by side: lineage, and per named model test L1 and 68% coverage; ``?set=`` picks which."""
    chosen = [name for name in request.GET.getlist("set") if name]
    every = list(ModelSet.objects.select_related("survey", "run")[:50])
    shown = [m for m in every if m.name in chosen] if chosen else every[:6]
    missing = sorted(set(chosen) - {m.name for m in shown})
    rows = []
    for name in (spec.name for spec in NAMED_MODELS):
        for label, unit, path in SET_METRICS:
            cells = []
            for model_set in shown:
                value = model_set.metrics.get(name, {})
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                cells.append(format_cell(value))
            rows.append((name, label, unit, cells))
    best = {}
    for name in (spec.name for spec in NAMED_MODELS):
        l1 = [(m.metrics.get(name, {}).get("test", {}).get("l1"), m.name) for m in shown]
        l1 = [item for item in l1 if item[0] is not None]
        if len(l1) > 1:
            best[name] = min(l1)[1]
    return render(
        request,
        "webui/model_sets.html",
        {"every": every, "shown": shown, "rows": rows, "missing": missing, "best": best, "chosen": chosen},
    )


#: The browser's sortable columns.
SORTABLE = set(ORDERABLE_COLUMNS)


def catalogue_browser(request: HttpRequest) -> HttpResponse:
    """The catalogue table with the API's filters, a cone form, sorting, pages and downloads."""
    from catalogue.api.filters import GalaxyFilter

    params = request.GET.copy()
    params.pop("page", None)
    for name in [name for name, values in params.lists() if not any(values)]:
        params.pop(name)  # the form submits its empty fields; the filters want them left out
    ordering = params.get("ordering", "objid")
    if ordering.lstrip("-") not in SORTABLE:
        ordering = "objid"
    filterset = GalaxyFilter(params, queryset=Galaxy.objects.select_related("survey"))
    error = ""
    rows, page = [], None
    try:
        if not filterset.is_valid():
            raise ValueError("; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items()))
        queryset = filterset.qs.order_by(ordering, "id")
        model = filterset.prediction_model
        page = Paginator(queryset, 50).get_page(request.GET.get("page"))
        for galaxy in page:
            cells = [format_cell(getattr(galaxy, c)) for c, _, _ in GALAXY_COLUMNS]
            if model is not None:
                cells.append(format_cell(getattr(galaxy, "ml_pred", None)))
            rows.append((galaxy.pk, galaxy.survey.name, cells))
    except (ValueError, ValidationError) as exc:  # a bad filter is explained, not a 500
        error = _explain(exc)
        model = None
    predicted = column("ml_pred")
    columns = list(GALAXY_COLUMNS) + ([(predicted.name, f"{predicted.heading} ({model.name})", predicted.unit)] if model else [])
    query = params.urlencode()
    return render(
        request,
        "webui/catalogue.html",
        {
            "form": filterset.form,
            "columns": columns,
            "rows": rows,
            "page": page,
            "error": error,
            "ordering": ordering,
            "query": query,
            "query_without_ordering": _without(params, "ordering"),
            "sortable": SORTABLE,
            "formats": FORMATS,
        },
    )


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
            (
                gz2.short_name(gz2.ANSWER_IDS[i]),
                "\u2013" if votes is None else f"{votes.probabilities[i]:.2f}",
                "\u2013" if predicted is None else f"{predicted[i]:.2f}",
            )
            for i in order
        ]
    latest = selectors.latest_prediction_per_model(galaxy)
    prediction_rows = [
        (
            p.model,
            format_cell(p.ml_pred),
            _interval(p.ml_lo68, p.ml_hi68),
            format_cell(p.mstar_pred),
            _interval(p.mstar_lo68, p.mstar_hi68),
            format_cell(float(np.log10(p.ml_pred / galaxy.ml_g))) if galaxy.ml_g else "\u2013",
            "; ".join(p.support_reasons),
        )
        for p in latest.values()
    ]
    prediction_figure = ""
    if latest:
        chosen = list(latest.values())
        prediction_figure = figures.predictions_against_target(
            list(latest),
            [p.ml_pred for p in chosen],
            galaxy.ml_g,
            galaxy.ml_g_err,
            [p.ml_lo68 for p in chosen],
            [p.ml_hi68 for p in chosen],
        )
    gz2_figure = ""
    if votes is not None or predicted is not None:
        gz2_figure = figures.gz2_bars(None if votes is None else votes.probabilities, predicted)
    colour_figure = _colour_figure(galaxy, pre)
    return render(
        request,
        "webui/galaxy.html",
        {
            "galaxy": galaxy,
            "fields": fields,
            "pre": pre,
            "features": features,
            "resolutions": resolutions,
            "has_image": galaxy.images.filter(band="g", status="ok").exists(),
            "top_answers": top_answers,
            "has_prediction": predicted is not None,
            "prediction_rows": prediction_rows,
            "prediction_figure": prediction_figure,
            "gz2_figure": gz2_figure,
            "colour_figure": colour_figure,
            "catalogue_colour": galaxy.mag_g - galaxy.mag_i if galaxy.mag_g is not None and galaxy.mag_i is not None else None,
        },
    )


def _colour_figure(galaxy: Galaxy, pre) -> str:
    """The g - i map at the largest resolution it was made at, or '' when the galaxy has none."""
    if pre is None or pre.i_band != "ok":
        return ""
    for resolution in sorted(stored_resolutions(galaxy), reverse=True):
        try:
            colours = load_log_images([galaxy], resolution, channel=ImageStore.Channel.COLOUR)[0]
        except LookupError:
            continue
        return figures.colour_map(colours)
    return ""


@cache_control(max_age=3600)
def galaxy_image(request: HttpRequest, pk: int, stage: str) -> HttpResponse:
    """PNG of a galaxy at one preprocessing stage: 'g' (the cutout) or 'log<res>' (network input)."""
    galaxy = get_object_or_404(Galaxy, pk=pk)
    if stage == "g":
        image = usable_image(galaxy)
        if image is None:
            raise Http404("no usable g image")
        _, data = read_cutout(image)
        return HttpResponse(png_bytes(asinh_display(central_square(data)[0]), size=256), content_type="image/png")
    if stage == "clean":
        return HttpResponse(star_subtracted_png(galaxy), content_type="image/png")
    if stage.startswith("log") and stage[3:].isdigit():
        if int(stage[3:]) not in stored_resolutions(galaxy):
            raise Http404("not preprocessed at that resolution")
        picture = linear_display(load_log_images([galaxy], int(stage[3:]))[0])
        return HttpResponse(png_bytes(picture, size=256), content_type="image/png")
    raise Http404(f"unknown stage {stage!r}")


def star_subtracted_png(galaxy: Galaxy) -> bytes:
    """The cutout after the stage's own star removal, same stretch as the raw one, removed stars circled in red."""
    try:
        cutout = cutout_for_preprocessing(galaxy)
    except ValueError as exc:
        raise Http404(str(exc)) from exc
    removal = remove_stars(cutout.data, cutout.psf_fwhm_px, cutout.prior_xy, cutout.seed)
    picture = asinh_display(removal.cleaned, reference=removal.square)
    stars = [(s.x, s.y) for s in removal.stars]
    return png_bytes(mark_points(picture, stars, radius=2.5 * cutout.psf_fwhm_px), size=256)


@cache_control(max_age=86400)
def plotly_js(request: HttpRequest) -> FileResponse:  # noqa: ARG001 - Django's signature
    """plotly.js from the installed plotly package: figures work without internet."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(open(path, "rb"), content_type="text/javascript")


def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A model's metrics and the paper's figures for it (Figs. 4-7), from its test-split predictions."""
    model = get_object_or_404(TrainedModel.objects.select_related("survey", "run"), pk=pk)
    context = {"model": model, "metrics": [], "per_class": [], "figures": {}}
    metrics = model.metrics or {}
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict) and "l1" in metrics[split]:
            m = metrics[split]
            context["metrics"].append((split, [format_cell(m.get(k)) for k in METRIC_KEYS]))
    for name, m in (metrics.get("test_per_class") or {}).items():
        context["per_class"].append((name, [format_cell(m.get(k)) for k in METRIC_KEYS]))
    if model.curves:
        context["figures"]["curves"] = figures.training_curves(model.curves)
    calibration = metrics.get("calibration") or {}
    if calibration.get("coverage_68") is not None:
        context["figures"]["calibration"] = figures.calibration_plot(calibration)
        context["calibration"] = calibration
    if metrics.get("permutation_importance"):
        context["figures"]["importance"] = figures.importance_bars(metrics["permutation_importance"])
    test = selectors.test_split_predictions(model)
    context["n_test_predictions"] = len(test["predicted"])
    if len(test["predicted"]):
        context["figures"]["pred_vs_true"] = figures.predicted_vs_true(test["predicted"], test["target"])
        dex = np.log10(test["predicted"] / test["target"])
        l1 = l1_per_galaxy(test["predicted"], test["target"], test["error"])
        context["figures"]["errors"] = figures.error_histograms(dex, l1)
        context["figures"]["relations"] = figures.ml_relations(
            test["lum_g"], test["predicted"], test["p_features"], test["morphology"], test["z"]
        )
    return render(request, "webui/model.html", context)


METRIC_KEYS = ("l1", "l2", "rmsle", "median_l1", "within_015_dex", "n")
METRIC_LABELS = ("L1", "L2", "RMSLE [dex]", "median L1", "within 0.15 dex", "galaxies")


def experiments(request: HttpRequest, name: str) -> HttpResponse:
    """The survey's latest experiments: Table 1, Table B.1, Fig. 8 and the significance tests."""
    survey = get_object_or_404(Survey, name=name)
    run = latest_succeeded_run(survey, RunStage.EXPERIMENTS)
    rows = list(ExperimentResult.objects.filter(run=run).order_by("id")) if run else []
    tables = {}
    for row in rows:
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
    return render(
        request,
        "webui/experiments.html",
        {
            "survey": survey,
            "run": run,
            "tables": tables,
            "titles": EXPERIMENT_TITLES,
            "band_figure": figures.band_set_bars(band_rows) if band_rows else "",
            "interval_note": _interval_note(survey),
        },
    )


def _interval_note(survey: Survey) -> str:
    """How the survey's latest g_morph intervals were calibrated, and on how many galaxies."""
    model = TrainedModel.objects.filter(survey=survey, name="g_morph").order_by("-created").first()
    calibration = (model.metrics or {}).get("calibration", {}) if model else {}
    return calibration.get("description") or calibration.get("method", "")


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


def experiments_csv(request: HttpRequest, name: str) -> HttpResponse:  # noqa: ARG001 - Django's signature
    """Every row of the survey's latest experiments as CSV."""
    import csv
    import io

    survey = get_object_or_404(Survey, name=name)
    run = latest_succeeded_run(survey, RunStage.EXPERIMENTS)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "experiment",
            "method",
            "loss",
            "feature_groups",
            "l1",
            "l2",
            "rmsle_dex",
            "median_l1",
            "within_015_dex",
            "n",
            "ks_pvalue",
            "bootstrap_pvalue",
        ]
    )
    for r in ExperimentResult.objects.filter(run=run).order_by("id") if run else []:
        significance = [r.details.get("ks_pvalue", ""), r.details.get("bootstrap_pvalue", "")]
        writer.writerow(
            [
                r.experiment,
                r.method,
                r.loss,
                " ".join(r.feature_groups),
                r.l1,
                r.l2,
                r.rmsle,
                r.median_l1,
                r.within_015_dex,
                r.n,
                *significance,
            ]
        )
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="morphomass-{survey.name}-experiments.csv"'
    return response


def _interval(lo: float | None, hi: float | None) -> str:
    return "\u2013" if lo is None or hi is None else f"{lo:.3g} \u2013 {hi:.3g}"


@ensure_csrf_cookie
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A run's live progress (the page polls the API), its failures and log tail; staff may cancel it."""
    from catalogue.services.runs import chunk_failures
    from catalogue.services.workflow import stage_runs

    run = get_object_or_404(Run.objects.select_related("survey"), pk=pk)
    stages = stage_runs(run) if run.stage == "workflow" else []
    return render(
        request,
        "webui/run.html",
        {"run": run, "failures": chunk_failures(run), "stages": stages, "log_tail": "\n".join(run.log.splitlines()[-40:])},
    )


def health(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - Django's signature
    """For container healthchecks and load balancers: 200 while the database answers, 503 otherwise."""
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return JsonResponse({"database": f"unreachable: {exc}"}, status=503)
    return JsonResponse({"database": "ok"})


#: The /predict/ form's optional numbers: left out when empty, as the API's multipart form would.
PREDICT_FIELDS = ("z", "mag_g", "magerr_g", "mag_i", "objid", "models")


@login_required(login_url="/admin/login/")
def predict(request: HttpRequest) -> HttpResponse:
    """One galaxy's M/L from an uploaded g cutout, as ``POST /api/predict/`` gives it, with its images."""
    from catalogue.api.serializers import PredictUploadSerializer
    from catalogue.services.model_sets import default_model_set, resolve_model_set
    from catalogue.services.predict_one import Upload, UploadError, predict_upload

    context: dict = {"sets": ModelSet.objects.select_related("survey")[:50], "values": {}, "errors": {}}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in PREDICT_FIELDS}
        context["values"] = values
        form = PredictUploadSerializer(data={**{k: v for k, v in values.items() if v}, "image": request.FILES.get("image")})
        if not form.is_valid():
            context["errors"] = {k: " ".join(str(m) for m in v) for k, v in form.errors.items()}
        else:
            data = form.validated_data
            try:
                model_set = resolve_model_set(data["models"]) if data.get("models") else default_model_set()
                upload = Upload(
                    data["image"].read(), data["z"], data["mag_g"], data.get("magerr_g"), data.get("mag_i"), data.get("objid")
                )
                result = predict_upload(upload, model_set)
            except UploadError as exc:
                field, _, message = str(exc).partition(": ")
                context["errors"] = {field: message}
            except ValueError as exc:
                context["errors"] = {"models": str(exc)}
            else:
                context["result"] = result.as_dict()
                context["rows"] = _prediction_rows(result.predictions)
                context["images"] = _upload_pictures(result.galaxy)
    return render(request, "webui/predict.html", context, status=400 if context["errors"] else 200)


def _prediction_rows(predictions: dict[str, dict]) -> list[tuple]:
    return [
        (
            name,
            format_cell(p["ml"]),
            _interval(p["ml_lo68"], p["ml_hi68"]),
            _interval(p["ml_lo95"], p["ml_hi95"]),
            f"{p['mstar']:.3e}" if p["mstar"] else "\u2013",
            _interval(p["mstar_lo68"], p["mstar_hi68"]),
            "; ".join(p["reasons"]) or "no",
        )
        for name, p in predictions.items()
    ]


def _upload_pictures(galaxy) -> list[tuple[str, str]]:
    """(caption, PNG data URI) of the upload: raw, star-removed (stars circled), log-scaled network input."""
    import base64

    removal, log_image = galaxy.removal, galaxy.preprocessed.log_image
    stars = [(star.x, star.y) for star in removal.stars]
    radius = 2.5 * max(1.0, removal.square.shape[0] / 128)
    pictures = [
        ("raw cutout (central square)", asinh_display(removal.square)),
        (
            f"stars removed ({len(stars)}, circled)",
            mark_points(asinh_display(removal.cleaned, reference=removal.square), stars, radius),
        ),
        (f"log-scaled, a = {galaxy.preprocessed.scaling_value:.3g}", linear_display(log_image)),
    ]
    return [(caption, "data:image/png;base64," + base64.b64encode(png_bytes(p, size=256)).decode()) for caption, p in pictures]


def survey_moc(request: HttpRequest, name: str) -> HttpResponse:
    """The survey's footprint as an IVOA MOC in FITS: the HEALPix cells (``?order=``, 0-14) holding its galaxies."""
    import io

    from pipeline.sky import MOC_ORDER, footprint_moc

    survey = get_object_or_404(Survey, name=name)
    raw = request.GET.get("order", str(MOC_ORDER))
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_MOC_ORDER:
        return HttpResponse(
            f"order must be an integer from 0 to {MAX_MOC_ORDER}, got {raw!r}\n", status=400, content_type="text/plain"
        )
    positions = Galaxy.objects.filter(survey=survey).exclude(status="rejected").values_list("ra", "dec")
    ra_dec = np.array(list(positions), dtype=float).reshape(-1, 2)  # a missing position is NaN, left out
    try:
        moc = footprint_moc(ra_dec[:, 0], ra_dec[:, 1], int(raw))
    except ValueError as exc:
        raise Http404(f"survey {survey.name} has no galaxy with a position: {exc}") from None
    buffer = io.BytesIO()
    moc.serialize(format="fits").writeto(buffer)
    response = HttpResponse(buffer.getvalue(), content_type="application/fits")
    response["Content-Disposition"] = f'attachment; filename="{survey.name}-moc.fits"'
    return response


#: The finest footprint offered (13 arcsec cells).
MAX_MOC_ORDER = 14


#: The ADQL page's first query, and its cap on rows (downloads through /tap/sync take more).
ADQL_EXAMPLE = (
    "SELECT TOP 20 c.survey, c.objid, c.z, c.morphology, c.ml_pred, c.ml_lo68, c.ml_hi68, c.mstar_pred\n"
    "FROM morphomass.catalogue AS c\n"
    "WHERE c.ml_pred IS NOT NULL\n"
    "ORDER BY c.ml_pred DESC"
)
ADQL_PAGE_ROWS = 1000


def adql(request: HttpRequest) -> HttpResponse:
    """ADQL in the browser: the TAP tables with their columns, a query box, the first rows and downloads."""
    from catalogue.tap import query as tap_query
    from catalogue.tap import schema as tap_schema
    from catalogue.tap.adql import AdqlError

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
        "tables": [],
    }
    for table in tap_schema.TABLES:
        columns = [(name, table.column(name)) for name in table.columns]
        context["tables"].append((table, columns))
    if text.strip():
        try:
            prepared = tap_query.prepare(text, shown, settings.TAP_SYNC_TIMEOUT_S)
            context["rows"] = [[format_cell(v) for v in row] for row in tap_query.fetch(prepared, settings.TAP_SYNC_TIMEOUT_S)]
            context["columns"] = prepared.columns
            context["overflow"] = prepared.overflow
            context["downloads"] = [
                (fmt, "/tap/sync?" + urlencode({"LANG": "ADQL", "QUERY": text, "FORMAT": fmt}))
                for fmt in ("votable", "csv", "fits")
            ]
        except (AdqlError, tap_query.QueryError) as exc:
            context["error"] = str(exc)
    return render(request, "webui/adql.html", context)
