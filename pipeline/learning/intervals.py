"""Calibrated per-galaxy M/L intervals, and how well they are calibrated.

Intervals are in log10 M/L (a factor, never a negative M/L), cross-conformal (CV+, Barber et
al. 2021): the calibration residuals are out-of-fold, from K refits of the point model over
train + validation, because the validation split also chose the point model and its own
residuals would under-cover new data. Each residual is scaled by how far the M/L may lie on
its side of the point (two LightGBM quantile models of log10 M/L, as conformalised quantile
regression does) and crepes calibrates the quantile of those scores per morphology class with
enough galaxies (Mondrian), so coverage holds per class. :func:`calibration` measures coverage
on held-out galaxies. Measurements of the choices: ``benchmarks/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

from pipeline.learning.threads import gbm_threads

LEVELS = (0.68, 0.95)
#: A class needs this many validation galaxies for its own correction (else it shares one
#: with the other small classes):
#: on a 2,000-galaxy survey, corrections from 30-90 galaxies per class cost more coverage
#: to noise (test coverage 0.605 instead of 0.667 at 68% for gi_morph) than they gained.
MIN_GROUP_CALIBRATION = 100
#: Quantile models: small and fixed (no early stopping: the validation split calibrates).
QUANTILE_PARAMS = {
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "learning_rate": 0.05,
    "feature_fraction": 0.4,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "verbosity": -1,
}
QUANTILE_ROUNDS = 300
#: Folds of the out-of-fold calibration residuals.
CV_FOLDS = 5
#: The difficulty's quantiles (its spread is the 68% one) and its floor in dex: a galaxy
#: whose two quantile models agree is not therefore certain.
DIFFICULTY_QUANTILES = (0.16, 0.84)
MIN_DIFFICULTY_DEX = 0.02
#: The shortest side, as a fraction of half the quantile range.
MIN_SIDE_FRACTION = 0.5
#: The galaxies the classes without their own calibration need to share one; with fewer,
#: they share every galaxy's (a 95% interval needs at least 39 scores to be finite).
MIN_SHARED_CALIBRATION = 60
CROSS_CONFORMAL = "cross-conformal"


@dataclass
class Difficulty:
    """How far below and above its point a galaxy's log10 M/L may lie, from two quantile models.

    Two LightGBM quantile models (16% and 84%) on the point model's own features: the
    distances from the point down to the one and up to the other scale the interval's two
    sides, so intervals are wider where the features say less and asymmetric where the
    distribution of M/L given the features is.
    """

    boosters: dict = field(default_factory=dict)

    def fit(self, X, log_target, seed: int = 0) -> Difficulty:
        for alpha in DIFFICULTY_QUANTILES:
            data = lgb.Dataset(np.asarray(X, dtype=np.float32), log_target, params={"verbosity": -1})
            params = {**QUANTILE_PARAMS, "num_threads": gbm_threads(), "objective": "quantile", "alpha": alpha, "seed": seed}
            self.boosters[alpha] = lgb.train(params, data, num_boost_round=QUANTILE_ROUNDS)
        return self

    def scales(self, X, log_point) -> tuple[np.ndarray, np.ndarray]:
        """How far the M/L may lie below and above the point (dex): from the point to the 16% and
        to the 84% quantile, each at least :data:`MIN_DIFFICULTY_DEX`."""
        X = np.asarray(X, dtype=np.float32)
        lo, hi = (self.boosters[a].predict(X) for a in DIFFICULTY_QUANTILES)
        log_point = np.asarray(log_point, dtype=float)
        # A side is never shorter than a fraction of the quantile range: a point beyond one
        # quantile would otherwise make that side vanish and its scores explode.
        floor = np.maximum(MIN_SIDE_FRACTION * np.abs(hi - lo) / 2.0, MIN_DIFFICULTY_DEX)
        return np.maximum(log_point - lo, floor), np.maximum(hi - log_point, floor)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile: the ceil((n + 1) level)-th smallest score."""
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    if not len(scores):
        raise ValueError("no calibration galaxies with a usable prediction and target")
    rank = int(np.ceil((len(scores) + 1) * level)) - 1
    return float(scores[min(rank, len(scores) - 1)])


@dataclass
class IntervalModel:
    """Intervals of log10 M/L around a point prediction.

    :meth:`fit_cross_conformal` calibrates on out-of-fold residuals (the method of every
    model fitted now). Models stored before it hold a split-conformal calibration on the
    validation split (``cqr``: quantile ``boosters`` and ``corrections``; ``residual``:
    ``corrections`` only), which :meth:`intervals` still applies.
    """

    method: str = "cqr"
    levels: tuple[float, ...] = LEVELS
    boosters: dict = field(default_factory=dict)
    corrections: dict = field(default_factory=dict)  # level -> dex added to each side
    difficulty: Difficulty | None = None
    systems: dict = field(default_factory=dict)  # "classes" (Mondrian) and "rest": crepes conformal regressors
    classes: tuple[str, ...] = ()  # classes calibrated on their own
    calibrated_on: dict = field(default_factory=dict)  # what the calibration used: galaxies, folds, per class

    def fit_cross_conformal(
        self,
        log_target: np.ndarray,
        log_point_oof: np.ndarray,
        groups: np.ndarray,
        *,
        scales_oof: tuple[np.ndarray, np.ndarray] | None = None,
        difficulty: Difficulty | None = None,
        folds: int = CV_FOLDS,
    ) -> IntervalModel:
        """Calibrate on out-of-fold residuals r = log10(t) - log10(p_oof), scaled per side.

        The score is r / up where the target lies above the point and -r / down below it,
        with (down, up) the out-of-fold :meth:`Difficulty.scales` (``scales_oof``) when a
        ``difficulty`` gives new galaxies theirs; without one both are 1 (the baselines:
        the score is |r|). crepes' Mondrian conformal regressor calibrates the score's
        quantile per class with at least :data:`MIN_GROUP_CALIBRATION` galaxies.
        """
        from crepes import ConformalRegressor

        self.method, self.difficulty = CROSS_CONFORMAL, difficulty
        residuals = np.asarray(log_target, dtype=float) - np.asarray(log_point_oof, dtype=float)
        down, up = (np.ones(len(residuals)), np.ones(len(residuals))) if scales_oof is None else scales_oof
        scores = np.where(residuals > 0, residuals / np.asarray(up), -residuals / np.asarray(down))
        groups = np.asarray(groups, dtype=object)
        usable = np.isfinite(scores)
        if not usable.any():
            raise ValueError("no calibration galaxies with a usable prediction and target")
        scores, groups = scores[usable], groups[usable]
        counts = {str(g): int((groups == g).sum()) for g in dict.fromkeys(groups)}
        self.classes = tuple(g for g, n in counts.items() if g and n >= MIN_GROUP_CALIBRATION)
        own = np.isin(groups, self.classes)
        if own.any():
            self.systems["classes"] = ConformalRegressor().fit(scores[own], bins=groups[own])
        # The other classes share one calibrated on them alone (on all galaxies when they
        # are too few): a pooled one would be set by the big classes.
        rest = ~own if (~own).sum() >= MIN_SHARED_CALIBRATION else np.ones(len(own), bool)
        self.systems["rest"] = ConformalRegressor().fit(scores[rest])
        self.calibrated_on = {
            "galaxies": int(usable.sum()),
            "folds": int(folds),
            "residuals": "out-of-fold over train + validation",
            "own_calibration": {g: counts[g] for g in self.classes},
            "shared_calibration": int(rest.sum()),
        }
        return self

    def _raw(self, X, point, level: float) -> tuple[np.ndarray, np.ndarray]:
        log_point = np.log10(np.asarray(point, dtype=float))
        if self.method == "residual":
            return log_point, log_point
        X = np.asarray(X, dtype=np.float32)
        lo = self.boosters[(level, "lo")].predict(X)
        hi = self.boosters[(level, "hi")].predict(X)
        # The point prediction always lies inside its own interval.
        return np.minimum(np.minimum(lo, hi), log_point), np.maximum(np.maximum(lo, hi), log_point)

    def intervals(self, X, point, groups=None) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """level -> (lower, upper) M/L (Msun/Lsun_g) for each galaxy (``groups``: its class).

        Only ever widened after calibration, never narrowed: each interval holds the point
        prediction, and each wider level holds the narrower one.
        """
        groups = np.full(len(point), "", dtype=object) if groups is None else np.asarray(groups, dtype=object)
        log_point = np.log10(np.asarray(point, dtype=float))
        if self.method == CROSS_CONFORMAL:
            return self._predictive_intervals(X, log_point, groups)
        out = {}
        inner_lo, inner_hi = log_point, log_point
        for level in sorted(self.levels):
            lo, hi = self._raw(X, point, level)
            q = np.array([self.corrections.get((level, g), self.corrections[level]) for g in groups], dtype=float)
            inner_lo, inner_hi = np.minimum(lo - q, inner_lo), np.maximum(hi + q, inner_hi)
            out[level] = (10**inner_lo, 10**inner_hi)
        return out

    def _predictive_intervals(self, X, log_point, groups) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        n = len(log_point)
        down, up = self.difficulty.scales(X, log_point) if self.difficulty is not None else (np.ones(n), np.ones(n))
        own = np.isin(groups, self.classes)
        out = {}
        for level in sorted(self.levels):
            q = np.full(n, np.nan)
            for system, hit, bins in (("classes", own, groups[own]), ("rest", ~own, None)):
                if hit.any():
                    q[hit] = self.systems[system].predict_int(np.zeros(int(hit.sum())), bins=bins, confidence=level)[:, 1]
            # q grows with the level, so each interval holds the point and the wider level the narrower one.
            out[level] = (10 ** (log_point - q * down), 10 ** (log_point + q * up))
        return out

    def describe(self) -> str:
        """How the intervals were calibrated, in a sentence for pages."""
        if self.method != CROSS_CONFORMAL:
            return f"{self.method}: split-conformal on the validation split"
        on = self.calibrated_on
        own = ", ".join(f"{g} {n}" for g, n in on.get("own_calibration", {}).items()) or "none"
        difficulty = "each side scaled by a quantile model of log M/L" if self.difficulty is not None else "one width per class"
        return (
            f"cross-conformal, Mondrian (crepes): {on.get('folds')}-fold out-of-fold residuals of "
            f"{on.get('galaxies')} train + validation galaxies, {difficulty}; classes with their own "
            f"calibration: {own}; {on.get('shared_calibration')} galaxies share one"
        )


def stellar_mass_interval(ml_lo, ml_hi, ml, lum_g, magerr_g, z_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Msun interval of M* = M/L x L_g: each side's log distance from the M/L interval and the
    magnitude error (0.4 x magerr_g dex at 1 sigma, times ``z_score``) added in quadrature."""
    log_ml = np.log10(ml)
    sigma_l = 0.4 * np.nan_to_num(np.asarray(magerr_g, dtype=float), nan=0.0) * z_score
    down = np.sqrt((log_ml - np.log10(ml_lo)) ** 2 + sigma_l**2)
    up = np.sqrt((np.log10(ml_hi) - log_ml) ** 2 + sigma_l**2)
    mass = np.asarray(ml) * np.asarray(lum_g)
    return mass * 10**-down, mass * 10**up


def calibration(intervals: dict, target: np.ndarray, error: np.ndarray, groups: dict[str, np.ndarray]) -> dict:
    """Empirical coverage of each interval level, overall and per group value, with widths.

    ``groups`` maps a grouping name (e.g. "class", "redshift bin") to one label per galaxy.
    Widths are the median full width in dex; ``target_error_dex`` is the median of the
    target's own 1-sigma error expressed in dex, for comparison.
    """
    target = np.asarray(target, dtype=float)
    report: dict = {"n": int(len(target)), "target_error_dex": float(np.median(np.log10(1 + np.asarray(error) / target)))}
    for level, (lo, hi) in intervals.items():
        inside = (lo <= target) & (target <= hi)
        key = f"{round(level * 100)}"
        report[f"coverage_{key}"] = float(inside.mean())
        report[f"width_{key}_dex"] = float(np.median(np.log10(hi / lo)))
        for name, labels in groups.items():
            labels = np.asarray(labels, dtype=object)
            report.setdefault(name, {})
            for value in dict.fromkeys(labels):
                hit = labels == value
                entry = report[name].setdefault(str(value), {"n": int(hit.sum())})
                entry[f"coverage_{key}"] = float(inside[hit].mean())
                entry[f"width_{key}_dex"] = float(np.median(np.log10(hi[hit] / lo[hit])))
    return report


def quantile_bins(values: np.ndarray, n_bins: int = 4, name: str = "") -> np.ndarray:
    """Label each value with its quantile bin, e.g. 'z 0.021-0.043' (edges from the values)."""
    values = np.asarray(values, dtype=float)
    edges = np.quantile(values[np.isfinite(values)], np.linspace(0, 1, n_bins + 1))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    return np.array([f"{name} {edges[i]:.3g}-{edges[i + 1]:.3g}".strip() for i in index], dtype=object)
