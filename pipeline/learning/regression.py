"""Fitting and scoring M/L models: the named ones (:mod:`pipeline.learning.named_models`) and any
:class:`ModelSpec` an experiment makes. Fitting follows the paper's Sect. 3.4: GBM hyper-parameters by
5-fold cross-validation on the training split (when a grid is given), early stopping on
the validation split and, for the morphology models, a retrain on the top-k features by
permutation importance, kept only when it lowers the validation L1 (with a few thousand
training galaxies, hundreds of CNN features can otherwise make a model worse).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold

from pipeline.learning.data import LearningData
from pipeline.learning.gbm import ConstantML, GBMRegressor
from pipeline.learning.intervals import (
    CV_FOLDS,
    LEVELS,
    Difficulty,
    IntervalModel,
    calibration,
    quantile_bins,
    stellar_mass_interval,
)
from pipeline.learning.metrics import MORPHOLOGY_CLASSES, l1_per_galaxy, metrics_by_class, ml_metrics
from pipeline.learning.model_selection import cross_validate_grid, permutation_l1_importance, top_features
from pipeline.learning.named_models import ModelSpec
from pipeline.learning.powerlaw import PowerLawGI
from pipeline.learning.support import SupportModel

#: Features whose permutation importance is measured: those with the most split gain.
IMPORTANCE_CANDIDATES = 200


@dataclass
class FittedModel:
    """A fitted model, the columns it reads, and how it was chosen."""

    spec: ModelSpec
    estimator: object
    features: list[str]
    params: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    cv: list[dict] = field(default_factory=list)
    n_train: int = 0
    fit_seconds: float = 0.0
    intervals: IntervalModel | None = None
    support: SupportModel | None = None
    #: Out-of-fold predictions over train + validation: galaxy ids and M/L (Msun/Lsun_g).
    oof: dict = field(default_factory=dict)
    #: How the model was adapted to another survey (:class:`pipeline.learning.adapt.Adaptation`: the
    #: method chosen and the galaxies it saw); None for a model fitted on its own survey.
    adaptation: object | None = None

    def predict(self, data: LearningData, rows: np.ndarray | None = None) -> np.ndarray:
        """Predicted M/L (Msun/Lsun_g); NaN where the method cannot predict (no g - i colour, no
        features of an optional group the model reads)."""
        point = np.asarray(self.estimator.predict(data.matrix(self.features, rows)), dtype=float)
        return np.where(data.covered(self.spec.groups, rows), point, np.nan)

    def uncertainty(self, data: LearningData, rows: np.ndarray | None = None) -> dict:
        """Point M/L, its calibrated intervals and stellar-mass intervals, and out-of-support reasons.

        Returns a dict of arrays: ``ml``, ``ml_lo68``, ``ml_hi68``, ``ml_lo95``, ``ml_hi95``
        (Msun/Lsun_g), ``mstar`` and its ``mstar_lo68`` ... (Msun), and ``reasons`` (a
        list of strings per galaxy, empty inside the training support).
        """
        X = data.matrix(self.features, rows)
        point = np.where(data.covered(self.spec.groups, rows), np.asarray(self.estimator.predict(X), dtype=float), np.nan)
        usable = np.isfinite(point) & (point > 0)
        safe = np.where(usable, point, 1.0)
        select = slice(None) if rows is None else rows
        lum = data.lum_g[select]
        magerr = data.magerr_g[select] if data.magerr_g is not None else np.zeros(len(point))
        out = {"ml": point, "mstar": point * lum}
        for level, (lo, hi) in self.intervals.intervals(X, safe, data.morphology[select]).items():
            lo, hi = np.minimum(lo, safe), np.maximum(hi, safe)  # exact, after the round trip through log10
            key = round(level * 100)
            out[f"ml_lo{key}"], out[f"ml_hi{key}"] = np.where(usable, lo, np.nan), np.where(usable, hi, np.nan)
            z_score = {68: 1.0, 95: 1.96}[key]
            m_lo, m_hi = stellar_mass_interval(lo, hi, safe, lum, magerr, z_score)
            out[f"mstar_lo{key}"], out[f"mstar_hi{key}"] = np.where(usable, m_lo, np.nan), np.where(usable, m_hi, np.nan)
        out["reasons"] = self.support.reasons(data.physical(rows), X)
        return out

    def describe(self) -> dict:
        """JSON-ready description: spec, features, parameters, selection and CV results."""
        return {
            **asdict(self.spec),
            "features": self.features,
            "params": self.params,
            "selection": self.selection,
            "cv": self.cv,
            "n_train": self.n_train,
            "fit_seconds": round(self.fit_seconds, 2),
            "best_iteration": int(getattr(self.estimator, "best_iteration_", 0) or 0),
            # Training galaxies a power law could not use (no g - i colour): counted, never silently dropped.
            **({"unusable_train_rows": len(self.estimator.unusable_)} if hasattr(self.estimator, "unusable_") else {}),
        }


def fit_model(
    spec: ModelSpec,
    data: LearningData,
    *,
    params: dict | None = None,
    grid: dict | None = None,
    train_rows: np.ndarray | None = None,
    importance: bool = True,
    uncertainty: bool = True,
    seed: int = 0,
) -> FittedModel:
    """Fit ``spec`` on the training split (or ``train_rows``), stopping early on the validation split.

    ``params`` are GBM hyper-parameters; with a ``grid`` they are chosen by 5-fold
    cross-validation on the training rows first. Raises ValueError when the training or
    validation split has no galaxy with a target.
    """
    started = time.perf_counter()
    train = data.rows("train") if train_rows is None else np.asarray(train_rows)
    val = data.rows("val")
    train, val = train[data.covered(spec.groups, train)], val[data.covered(spec.groups, val)]
    if not len(train) or not len(val):
        raise ValueError(f"{spec.name}: {len(train)} training and {len(val)} validation galaxies have an M/L target")
    features = data.feature_names(spec.groups, spec.bands)
    params, cv = dict(params or {}), []
    if spec.method == "gbm" and grid:
        base = GBMRegressor(loss="l1", random_state=seed, **params)
        X_train, y_train, e_train = data.matrix(features, train), data.target[train], data.error[train]
        points = cross_validate_grid(X_train, y_train, e_train, grid, base=base, seed=seed)
        params = {**params, **points[0].params}
        cv = [{"params": p.params, "cv_l1": p.cv_l1, "n_trees": p.n_trees} for p in points]
    estimator = _fit(spec, data, features, params, train, val, seed)
    fitted = FittedModel(spec, estimator, features, params, cv=cv, n_train=len(train))
    fitted.val_metrics = score(fitted, data, val)[0]
    if spec.method == "gbm" and spec.select_top and len(features) > spec.select_top:
        ranking = _importance(fitted, data, val, seed)
        top = top_features(ranking, spec.select_top)
        candidate = FittedModel(spec, _fit(spec, data, top, params, train, val, seed), top, params, cv=cv, n_train=len(train))
        candidate.val_metrics = score(candidate, data, val)[0]
        keep_top = candidate.val_metrics["l1"] < fitted.val_metrics["l1"]
        fitted.selection = {
            "all_features": len(features),
            "val_l1_all": fitted.val_metrics["l1"],
            "top_k": spec.select_top,
            "val_l1_top": candidate.val_metrics["l1"],
            "kept": "top" if keep_top else "all",
        }
        if keep_top:
            candidate.selection = fitted.selection
            fitted = candidate
        else:
            fitted.importance = ranking
    if importance and spec.method == "gbm" and not fitted.importance:
        fitted.importance = _importance(fitted, data, val, seed)
    if uncertainty:
        fit_uncertainty(fitted, data, train, val, seed)
    fitted.fit_seconds = time.perf_counter() - started
    return fitted


def fit_uncertainty(fitted: FittedModel, data: LearningData, train: np.ndarray, val: np.ndarray, seed: int = 0) -> None:
    """Calibrated intervals from out-of-fold residuals over train + validation, and the training support.

    The point model is refitted :data:`~pipeline.intervals.CV_FOLDS` times with its chosen
    features and hyper-parameters (the number of trees fixed at the one early stopping
    chose), each time predicting the fold it did not see; for the GBMs the quantile models
    that scale their intervals' two sides are out-of-fold the same way.
    The out-of-fold predictions are kept (``fitted.oof``) for the experiments' paired
    comparisons.
    """
    rows = np.concatenate([train, val])
    X = data.matrix(fitted.features, rows)
    target, error = data.target[rows], data.error[rows]
    log_target = np.log10(target)
    point_oof, down_oof, up_oof = (np.full(len(rows), np.nan) for _ in range(3))
    gbm = fitted.spec.method == "gbm"
    for inside, held_out in KFold(CV_FOLDS, shuffle=True, random_state=seed).split(rows):
        refit = _refit(fitted, X[inside], target[inside], error[inside], seed)
        point_oof[held_out] = np.asarray(refit.predict(X[held_out]), dtype=float)
        if gbm:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_held_out = np.log10(point_oof[held_out])
            difficulty = Difficulty().fit(X[inside], log_target[inside], seed)
            down_oof[held_out], up_oof[held_out] = difficulty.scales(X[held_out], log_held_out)
    usable = np.isfinite(point_oof) & (point_oof > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_oof = np.log10(np.where(usable, point_oof, np.nan))
    fitted.intervals = IntervalModel().fit_cross_conformal(
        log_target,
        log_oof,
        data.morphology[rows],
        scales_oof=(down_oof, up_oof) if gbm else None,
        # on the training split, as the point model: in calibration each refit's point and quantiles
        # also came from the same galaxies, so a point sits among its quantiles alike in both
        difficulty=Difficulty().fit(X[: len(train)], log_target[: len(train)], seed) if gbm else None,
    )
    fitted.oof = {"galaxy_ids": data.galaxy_ids[rows][usable], "ml": point_oof[usable]}
    fitted.support = SupportModel().fit(
        data.physical(train), data.matrix(fitted.features, train), data.matrix(fitted.features, val), seed=seed
    )


def _refit(fitted: FittedModel, X: np.ndarray, y: np.ndarray, error: np.ndarray, seed: int):
    """The fitted model's estimator trained again on other galaxies with every choice kept."""
    estimator = clone(fitted.estimator)
    if isinstance(estimator, GBMRegressor):
        estimator.set_params(n_estimators=max(1, int(fitted.estimator.best_iteration_)), random_state=seed)
        return estimator.fit(X, y, error=error, feature_names=fitted.features)
    return estimator.fit(X, y, error=error)


def _fit(spec: ModelSpec, data: LearningData, features: list[str], params: dict, train, val, seed: int):
    X, y, e = data.matrix(features, train), data.target[train], data.error[train]
    if spec.method == "constant":
        return ConstantML().fit(X, y, error=e)
    if spec.method == "powerlaw":
        return PowerLawGI(loss=spec.loss).fit(X, y, error=e)
    model = GBMRegressor(loss=spec.loss, random_state=seed, **params)
    eval_set = (data.matrix(features, val), data.target[val], data.error[val])
    return model.fit(X, y, error=e, eval_set=eval_set, feature_names=features)


def _importance(fitted: FittedModel, data: LearningData, val: np.ndarray, seed: int) -> dict[str, float]:
    return permutation_l1_importance(
        fitted.estimator,
        data.matrix(fitted.features, val),
        data.target[val],
        data.error[val],
        fitted.features,
        seed=seed,
        candidates=IMPORTANCE_CANDIDATES,
    )


def score(fitted: FittedModel, data: LearningData, rows: np.ndarray) -> tuple[dict, dict, np.ndarray]:
    """Metrics, per-class metrics and per-galaxy L1 of ``fitted`` on ``rows``.

    Galaxies the model cannot predict (a power law without a g - i colour) are counted in
    ``metrics['n_unpredicted']`` and left out of the metrics, never silently.
    """
    predicted = fitted.predict(data, rows)
    target, error = data.target[rows], data.error[rows]
    usable = np.isfinite(predicted) & (predicted > 0)
    l1 = np.full(len(rows), np.nan)
    l1[usable] = l1_per_galaxy(predicted[usable], target[usable], error[usable])
    metrics = ml_metrics(predicted[usable], target[usable], error[usable])
    metrics["n_unpredicted"] = int((~usable).sum())
    classes = data.morphology[rows][usable]
    known = np.isin(classes, MORPHOLOGY_CLASSES)
    keep = np.flatnonzero(usable)[known]
    per_class = metrics_by_class(predicted[keep], target[keep], error[keep], classes[known]) if known.any() else {}
    return metrics, per_class, l1


def calibration_report(fitted: FittedModel, data: LearningData, test: np.ndarray) -> dict:
    """Coverage of the 68% and 95% intervals on held-out galaxies ``test`` (the test split, or a
    survey the model was applied to): overall, per class, per redshift and luminosity
    quartile; widths in dex beside the targets' own errors; the L1 of the galaxies flagged
    outside the training support against the rest; and how the intervals were calibrated."""
    u = fitted.uncertainty(data, test)
    usable = np.isfinite(u["ml"]) & (u["ml"] > 0)
    physical = data.physical(test)
    intervals = {level: (u[f"ml_lo{round(level * 100)}"][usable], u[f"ml_hi{round(level * 100)}"][usable]) for level in LEVELS}
    groups = {
        "by_class": data.morphology[test][usable],
        "by_redshift": quantile_bins(physical["redshift"][usable], 4, "z"),
        "by_luminosity": quantile_bins(np.log10(physical["luminosity"][usable]), 4, "log L"),
    }
    report = calibration(intervals, data.target[test][usable], data.error[test][usable], groups)
    flagged = np.array([bool(r) for r in u["reasons"]])
    l1 = l1_per_galaxy(u["ml"], data.target[test], data.error[test])
    report["out_of_support"] = {
        "n_flagged": int(flagged.sum()),
        "n": int(len(flagged)),
        "l1_flagged": float(np.nanmean(l1[flagged])) if flagged.any() else None,
        "l1_unflagged": float(np.nanmean(l1[~flagged])) if (~flagged).any() else None,
    }
    report["method"] = fitted.intervals.method
    report["calibrated_on"] = getattr(fitted.intervals, "calibrated_on", {})
    report["description"] = fitted.intervals.describe()
    return report
