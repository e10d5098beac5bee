"""Adapting a fitted M/L model to another instrument with a few hundred of its targets.

A model set trained on one survey and applied to another instrument's images reads features
that moved (a wider PSF, other pixels, a shallower sky change the image statistics and the
networks' activations), while the physics that ties them to M/L did not. A few hundred
galaxies of the new survey with SED-fit targets are enough to learn how far it moved:

* ``as_is``: the model unchanged (the reference every candidate must beat);
* ``scale``: one factor on every prediction, the weighted median of target / prediction (a
  shift in log M/L; two parameters' worth of data suffice);
* ``boost``: LightGBM trees fitted on the new survey's targets starting from the model's own
  predictions (LightGBM continued on the new survey, small leaves, the number of rounds by
  cross-validation): corrections that depend on the features, where the data allow.

Each candidate is scored by K-fold cross-validation on the adaptation targets alone (the
weighted L1 of the paper) and the best is kept (the correction trees' number of rounds is chosen
on the same folds, which flatters their score a little); its out-of-fold predictions calibrate the
intervals (cross-conformal, Mondrian per class where a class has enough galaxies) with the
source model's own difficulty scales, a fixed function of the features. The training
support is extended with the adaptation galaxies. Measurements: benchmarks/README.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
from sklearn.model_selection import KFold

from pipeline.learning.gbm import sample_weights, weighted_median
from pipeline.learning.intervals import CV_FOLDS, IntervalModel
from pipeline.learning.metrics import floored_error, l1_per_galaxy
from pipeline.learning.support import SupportModel
from pipeline.learning.threads import gbm_threads

METHODS = ("as_is", "scale", "boost")
#: The fewest adaptation targets: below this the cross-validated choice and the conformal
#: quantiles rest on too few galaxies (measured: benchmarks/README.md, "Adapting a model set").
MIN_TARGETS = 100
#: The correction trees: small, slow and shallow (a few hundred galaxies).
BOOST_PARAMS = {
    "objective": "l1",
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "learning_rate": 0.05,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
}
BOOST_MAX_ROUNDS = 400
BOOST_EARLY_STOPPING = 30


class TooFewTargets(ValueError):
    """Fewer adaptation targets than :data:`MIN_TARGETS`."""


@dataclass
class ScaledEstimator:
    """The source model's predictions times one factor."""

    base: object
    factor: float

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.base.predict(X), dtype=float) * self.factor


@dataclass
class BoostedEstimator:
    """The source model's predictions plus correction trees fitted on the new survey's targets."""

    base: object
    booster: lgb.Booster | None = None

    def predict(self, X) -> np.ndarray:
        point = np.asarray(self.base.predict(X), dtype=float)
        if self.booster is None:
            return point
        return point + self.booster.predict(np.asarray(X, dtype=np.float32), raw_score=True)


@dataclass
class Adaptation:
    """What adapting one model chose, and the evidence."""

    method: str
    cv_l1: dict[str, float]
    rounds: int = 0
    factor: float = 1.0
    n_targets: int = 0
    galaxy_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # the adaptation targets
    seconds: float = 0.0

    def describe(self) -> dict:
        return {
            "method": self.method,
            "cv_l1": {k: round(v, 4) for k, v in self.cv_l1.items()},
            "rounds": self.rounds,
            "factor": round(self.factor, 5),
            "n_targets": self.n_targets,
            "seconds": round(self.seconds, 2),
        }


def best_scale(predicted: np.ndarray, target: np.ndarray, error: np.ndarray) -> float:
    """The factor c minimising the weighted L1 of c p against t: the weighted median of t / p with weights p / e'."""
    return weighted_median(target / predicted, predicted / floored_error(target, error))


def _boost(X, target, error, base_point, rounds: int, seed: int) -> lgb.Booster:
    data = lgb.Dataset(np.asarray(X, dtype=np.float32), target, weight=sample_weights("l1", target, error), init_score=base_point)
    return lgb.train({**BOOST_PARAMS, "num_threads": gbm_threads(), "seed": seed}, data, num_boost_round=max(1, rounds))


def _boost_rounds(X, target, error, base_point, folds, seed: int) -> int:
    """Rounds of correction trees by cross-validation on the adaptation targets (0: none help)."""
    data = lgb.Dataset(np.asarray(X, dtype=np.float32), target, weight=sample_weights("l1", target, error), init_score=base_point)
    result = lgb.cv(
        {**BOOST_PARAMS, "num_threads": gbm_threads(), "seed": seed, "metric": "l1"},
        data,
        num_boost_round=BOOST_MAX_ROUNDS,
        folds=folds,
        callbacks=[lgb.early_stopping(BOOST_EARLY_STOPPING, verbose=False)],
    )
    curve = next(v for k, v in result.items() if k.endswith("l1-mean"))
    return int(np.argmin(curve)) + 1


def adapt_estimator(
    base, X: np.ndarray, target: np.ndarray, error: np.ndarray, *, seed: int = 0, methods: tuple[str, ...] = METHODS
) -> tuple[object, Adaptation, np.ndarray]:
    """Choose and fit the adaptation of ``base`` (anything with ``predict(X)`` -> M/L) to these targets.

    Returns the adapted estimator, the choice with each candidate's cross-validated L1, and
    the chosen candidate's out-of-fold predictions (M/L, one per target: the calibration's).

    Raises
    ------
    TooFewTargets
        with fewer than :data:`MIN_TARGETS` targets.
    """
    started = time.perf_counter()
    target, error = np.asarray(target, dtype=float), np.asarray(error, dtype=float)
    if len(target) < MIN_TARGETS:
        raise TooFewTargets(f"{len(target)} targets; adapting needs at least {MIN_TARGETS}")
    base_point = np.asarray(base.predict(X), dtype=float)
    usable = np.isfinite(base_point) & (base_point > 0)
    safe_point = np.where(usable, base_point, np.nanmedian(base_point[usable]) if usable.any() else 1.0)
    splits = list(KFold(CV_FOLDS, shuffle=True, random_state=seed).split(target))
    oof = {"as_is": safe_point.copy()}
    if "scale" in methods:
        oof["scale"] = np.empty(len(target))
        for inside, held_out in splits:
            oof["scale"][held_out] = safe_point[held_out] * best_scale(safe_point[inside], target[inside], error[inside])
    rounds = 0
    if "boost" in methods and np.asarray(X).shape[1]:  # a model that reads no feature (the constant) has none to split on
        rounds = _boost_rounds(X, target, error, safe_point, splits, seed)
        oof["boost"] = np.empty(len(target))
        for inside, held_out in splits:
            booster = _boost(X[inside], target[inside], error[inside], safe_point[inside], rounds, seed)
            oof["boost"][held_out] = safe_point[held_out] + booster.predict(
                np.asarray(X[held_out], dtype=np.float32), raw_score=True
            )
    cv_l1 = {name: float(np.mean(l1_per_galaxy(np.maximum(p, 1e-3), target, error))) for name, p in oof.items()}
    method = min(cv_l1, key=lambda name: (cv_l1[name], METHODS.index(name)))
    factor = 1.0
    if method == "scale":
        factor = best_scale(safe_point, target, error)
        estimator = ScaledEstimator(base, factor)
    elif method == "boost":
        estimator = BoostedEstimator(base, _boost(X, target, error, safe_point, rounds, seed))
    else:
        estimator = base
    choice = Adaptation(method, cv_l1, rounds if method == "boost" else 0, factor, len(target))
    choice.seconds = time.perf_counter() - started
    return estimator, choice, oof[method]


def recalibrate(
    source_intervals: IntervalModel, X: np.ndarray, target: np.ndarray, point_oof: np.ndarray, classes: np.ndarray
) -> IntervalModel:
    """Intervals calibrated on the adaptation targets' out-of-fold residuals (cross-conformal,
    Mondrian per class with enough galaxies), each side scaled by the source model's difficulty
    (a fixed function of the features, so the calibration stays valid) where it has one."""
    difficulty = getattr(source_intervals, "difficulty", None)
    usable = np.isfinite(point_oof) & (point_oof > 0)
    log_point = np.log10(np.where(usable, point_oof, np.nan))
    scales = difficulty.scales(X, np.where(usable, log_point, 0.0)) if difficulty is not None else None
    return IntervalModel().fit_cross_conformal(
        np.log10(target), log_point, classes, scales_oof=scales, difficulty=difficulty, folds=CV_FOLDS
    )


def extend_support(
    physical_source: dict[str, np.ndarray],
    X_source: np.ndarray,
    X_source_val: np.ndarray,
    physical_new: dict[str, np.ndarray],
    X_new: np.ndarray,
    seed: int = 0,
) -> SupportModel:
    """The training support of the source's training galaxies and the adaptation galaxies together
    (the distance threshold from the source's validation split, as before)."""
    physical = {name: np.concatenate([physical_source[name], physical_new[name]]) for name in physical_source}
    return SupportModel().fit(physical, np.vstack([X_source, X_new]), X_source_val, seed=seed)
