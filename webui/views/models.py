"""A trained model's page (the paper's Figs. 4-7) and the model sets side by side."""

from __future__ import annotations

import numpy as np
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from catalogue import selectors
from pipeline.learning.metrics import l1_per_galaxy
from pipeline.learning.named_models import NAMED_MODEL_NAMES
from webui import figures
from webui.cells import format_cell

METRIC_KEYS = ("l1", "l2", "rmsle", "median_l1", "within_015_dex", "n")
#: Rows of the model-set comparison: (label, unit, how to read it from a set's summary).
SET_METRICS = (
    ("test L1", "", ("test", "l1")),
    ("68% coverage (test)", "", ("coverage_68",)),
    ("95% coverage (test)", "", ("coverage_95",)),
    # an adapted set: the set it was adapted from, applied as it is, on the same held-out galaxies
    ("adapted from, as it is: test L1", "", ("as_is", "test", "l1")),
    ("adapted from, as it is: 68% coverage", "", ("as_is", "coverage_68")),
    ("adapted from, as it is: 95% coverage", "", ("as_is", "coverage_95")),
    ("adaptation", "", ("method",)),
)


def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A model's metrics and the paper's figures for it (Figs. 4-7), from its test-split predictions."""
    model = selectors.model_by_id(pk)
    if model is None:
        raise Http404(f"no model #{pk}")
    metrics = model.metrics or {}
    context = {
        "model": model,
        "metrics": [
            (split, [format_cell(metrics[split].get(k)) for k in METRIC_KEYS])
            for split in ("val", "test")
            if isinstance(metrics.get(split), dict) and "l1" in metrics[split]
        ],
        "per_class": [
            (name, [format_cell(m.get(k)) for k in METRIC_KEYS]) for name, m in (metrics.get("test_per_class") or {}).items()
        ],
        "figures": {},
    }
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


def model_sets(request: HttpRequest) -> HttpResponse:
    """Model sets side by side: lineage, and per named model test L1 and 68% coverage; ``?set=`` picks which."""
    chosen = [name for name in request.GET.getlist("set") if name]
    every = selectors.model_sets(limit=50)
    shown = [m for m in every if m.name in chosen] if chosen else every[:6]
    rows = [
        (name, label, unit, [format_cell(_metric(model_set, name, path)) for model_set in shown])
        for name in NAMED_MODEL_NAMES
        for label, unit, path in SET_METRICS
    ]
    best = {}
    for name in NAMED_MODEL_NAMES:
        l1 = [(_metric(m, name, ("test", "l1")), m.name) for m in shown]
        l1 = [item for item in l1 if item[0] is not None]
        if len(l1) > 1:
            best[name] = min(l1)[1]
    context = {
        "every": every,
        "shown": shown,
        "rows": rows,
        "missing": sorted(set(chosen) - {m.name for m in shown}),
        "best": best,
        "chosen": chosen,
    }
    return render(request, "webui/model_sets.html", context)


def _metric(model_set, name: str, path: tuple[str, ...]):
    """One number of a set's summary of a named model (None where it has none)."""
    value = model_set.metrics.get(name, {})
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value
