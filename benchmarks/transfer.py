"""How well a model set does on a survey it was applied to, where that survey has targets.

For a survey predicted with a set trained elsewhere (``run_pipeline --survey NEW --models
SET``) and whose galaxies do have M/L targets (a simulated survey of another seed, or a
real one with SED fits), prints one JSON object: per named model the weighted L1 on every
galaxy of NEW's learning sample against the set's own test L1, the 68% and 95% interval
coverage and median widths overall, per morphology class and per redshift and luminosity
quartile, read from the stored predictions, and how many galaxies the model flags outside
the set's training selection (with the L1 of flagged and unflagged ones).

``--split-conformal`` also calibrates each model's intervals the way models were calibrated
before cross-conformal intervals (split-conformal on the training survey's validation
split: conformalised quantile regression for the GBMs, the residual quantile for the
baselines), with the same point models, and reports them on the same galaxies: the before
and after of the calibration, everything else fixed.

    DATABASE_URL=postgres://... .venv/bin/python benchmarks/transfer.py --survey otherB --models trainA [--split-conformal]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

import django  # noqa: E402

django.setup()

from catalogue.models import ModelSet, Prediction, Survey  # noqa: E402
from catalogue.selectors import applications, resolve_model_set  # noqa: E402
from catalogue.services.artifacts import load_pickle  # noqa: E402
from catalogue.services.learning_data import load_learning_data  # noqa: E402
from pipeline.learning.intervals import (  # noqa: E402
    MIN_GROUP_CALIBRATION,
    QUANTILE_PARAMS,
    QUANTILE_ROUNDS,
    IntervalModel,
    calibration,
    conformal_quantile,
    quantile_bins,
)
from pipeline.learning.metrics import l1_per_galaxy, ml_metrics  # noqa: E402
from pipeline.learning.regression import calibration_report  # noqa: E402

STORED = (
    "ml_pred",
    "ml_lo68",
    "ml_hi68",
    "ml_lo95",
    "ml_hi95",
    "mstar_pred",
    "out_of_support",
    "galaxy__ml_g",
    "galaxy__ml_g_err",
    "galaxy__z",
)


def rounded(groups: dict) -> dict:
    return {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()} for name, entry in groups.items()}


def stored_report(survey: Survey, model_set: ModelSet) -> dict:
    """Per named model, L1 and coverage of the predictions stored for ``survey``'s learning sample."""
    report = {}
    for model in model_set.named_models.order_by("name"):
        rows = list(
            Prediction.objects.filter(model=model, galaxy__survey=survey, galaxy__status="ok", galaxy__ml_g__isnull=False)
            .exclude(ml_pred__isnull=True)
            .values_list(*STORED, "galaxy__morphology")
        )
        if not rows:
            report[model.name] = {"n": 0}
            continue
        columns = {name: np.array([r[i] for r in rows], dtype=float) for i, name in enumerate(STORED)}
        classes = np.array([r[-1] for r in rows], dtype=object)
        pred, target, error = columns["ml_pred"], columns["galaxy__ml_g"], columns["galaxy__ml_g_err"]
        flagged = columns["out_of_support"].astype(bool)
        l1 = l1_per_galaxy(pred, target, error)
        groups = {
            "by_class": classes,
            "by_redshift": quantile_bins(columns["galaxy__z"], 4, "z"),
            "by_luminosity": quantile_bins(np.log10(columns["mstar_pred"] / pred), 4, "log L"),
        }
        levels = {level: (columns[f"ml_lo{level}"], columns[f"ml_hi{level}"]) for level in (68, 95)}
        coverage = calibration({level / 100: bounds for level, bounds in levels.items()}, target, error, groups)
        own = model_set.metrics.get(model.name, {})
        report[model.name] = {
            "n": len(rows),
            "l1": ml_metrics(pred, target, error)["l1"],
            "set_test_l1": own.get("test", {}).get("l1"),
            "coverage_68": coverage["coverage_68"],
            "coverage_95": coverage["coverage_95"],
            "set_test_coverage_68": own.get("coverage_68"),
            "width_68_dex": coverage["width_68_dex"],
            "width_95_dex": coverage["width_95_dex"],
            **{name: rounded(coverage[name]) for name in groups},
            "n_flagged": int(flagged.sum()),
            "l1_flagged": float(l1[flagged].mean()) if flagged.any() else None,
            "l1_unflagged": float(l1[~flagged].mean()) if (~flagged).any() else None,
        }
    return report


def split_conformal(method: str, X_train, y_train, X_val, y_val, point_val, groups_val=None, seed: int = 0) -> IntervalModel:
    """Intervals calibrated as models were before cross-conformal ones: split-conformal on the validation split.

    ``cqr``: quantile models of log10 M/L fitted on train, then the conformal correction per
    level (and per class with :data:`MIN_GROUP_CALIBRATION` validation galaxies) on val;
    ``residual``: the quantile of |log10(p / t)| on val. Classes without their own correction
    share one calibrated on them alone.
    """
    import lightgbm as lgb

    model = IntervalModel(method=method)
    log_train, log_val = np.log10(y_train), np.log10(y_val)
    if method == "cqr":
        for level in model.levels:
            for side, alpha in (("lo", (1 - level) / 2), ("hi", 1 - (1 - level) / 2)):
                data = lgb.Dataset(np.asarray(X_train, dtype=np.float32), log_train, params={"verbosity": -1})
                params = {**QUANTILE_PARAMS, "objective": "quantile", "alpha": alpha, "seed": seed}
                model.boosters[(level, side)] = lgb.train(params, data, num_boost_round=QUANTILE_ROUNDS)
    elif method != "residual":
        raise ValueError(f"unknown interval method {method!r}; choose cqr or residual")
    groups_val = np.full(len(log_val), "", dtype=object) if groups_val is None else np.asarray(groups_val, dtype=object)
    for level in model.levels:
        lo, hi = model._raw(X_val, point_val, level)
        scores = np.maximum(lo - log_val, log_val - hi)
        rest = np.ones(len(scores), bool)
        for group in dict.fromkeys(groups_val):
            hit = groups_val == group
            if hit.sum() >= MIN_GROUP_CALIBRATION:
                model.corrections[(level, group)] = conformal_quantile(scores[hit], level)
                rest &= ~hit
        model.corrections[level] = conformal_quantile(scores[rest] if rest.any() else scores, level)
    return model


def split_conformal_report(survey: Survey, model_set: ModelSet) -> dict:
    """Per named model, the coverage on ``survey`` of the same point model with split-conformal
    intervals calibrated on its training survey's validation split (the method before)."""
    applied = applications(survey, model_set).first().config["feature_sets"]
    new, _ = load_learning_data(survey, applied)
    rows = np.flatnonzero((new.split != "") & np.isfinite(new.target))
    report, training_data = {}, {}  # the training survey's data, loaded once per group of feature sets
    for model in model_set.named_models.order_by("name"):
        fitted = load_pickle(model.artifact.name)
        sets = model.hyperparameters["feature_sets"]
        key = tuple(sorted(sets.items()))
        if key not in training_data:
            training_data[key] = load_learning_data(model_set.survey, sets)[0]
        old = training_data[key]
        train, val = old.rows("train"), old.rows("val")
        before = split_conformal(
            "cqr" if fitted.spec.method == "gbm" else "residual",
            old.matrix(fitted.features, train),
            old.target[train],
            old.matrix(fitted.features, val),
            old.target[val],
            fitted.predict(old, val),
            old.morphology[val],
        )
        measured = calibration_report(dataclasses.replace(fitted, intervals=before), new, rows)
        keep = ("n", "method", "coverage_68", "coverage_95", "width_68_dex", "width_95_dex")
        keep += ("by_class", "by_redshift", "by_luminosity")
        report[model.name] = {k: rounded(v) if isinstance(v, dict) else v for k, v in measured.items() if k in keep}
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--survey", required=True, help="the survey the set was applied to (with targets)")
    parser.add_argument("--models", required=True, help="the model set: survey@run or its training survey's name")
    parser.add_argument(
        "--split-conformal",
        action="store_true",
        help="also report the same point models with split-conformal intervals (the calibration before)",
    )
    args = parser.parse_args()
    survey = Survey.objects.get(name=args.survey)
    model_set = resolve_model_set(args.models)
    report: dict = {"survey": survey.name, "model_set": model_set.name, "preset": model_set.preset}
    report["models"] = stored_report(survey, model_set)
    if args.split_conformal:
        report["split_conformal"] = split_conformal_report(survey, model_set)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
