"""The paper's metrics of an M/L prediction, overall and per morphology class.

With prediction p, target t and target error e, the error is floored at 5% of the target,
e' = max(e, 0.05 t), so a galaxy with an implausibly small error cannot dominate:

* L1 = mean(|p - t| / e'): the training loss and headline metric (dimensionless)
* L2 = sqrt(mean(((p - t) / e')^2))
* RMSLE = sqrt(mean(log10(p / t)^2)), in dex
* median L1, and the fraction of galaxies within 0.15 dex of the target.

Morphology classes follow the paper's Fig. 6, from CNN1's predicted (unconditional) GZ2
probabilities: irregular if P(irregular) > 0.2, else edge-on if P(edge-on) > 0.4, else
disk if P(features or disk) > 0.4, else elliptical.
"""

from __future__ import annotations

import numpy as np

from pipeline import gz2

#: A target's error is taken as at least this fraction of the target.
ERROR_FLOOR = 0.05
WITHIN_DEX = 0.15

MORPHOLOGY_CLASSES = ("irregular", "edge-on", "disk", "elliptical")
#: (class, answer id, threshold), tested in this order; what passes none is elliptical.
CLASS_RULES = (("irregular", "a22", 0.2), ("edge-on", "a04", 0.4), ("disk", "a02", 0.4))


def floored_error(target: np.ndarray, error: np.ndarray) -> np.ndarray:
    """max(e, 0.05 t): the error every weighted metric divides by."""
    target = np.asarray(target, dtype=float)
    return np.maximum(np.asarray(error, dtype=float), ERROR_FLOOR * target)


def l1_per_galaxy(predicted, target, error) -> np.ndarray:
    """|p - t| / max(e, 0.05 t) for each galaxy (dimensionless)."""
    predicted, target = np.asarray(predicted, dtype=float), np.asarray(target, dtype=float)
    return np.abs(predicted - target) / floored_error(target, error)


def _check(predicted, target, error) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    predicted, target, error = (np.asarray(a, dtype=float).ravel() for a in (predicted, target, error))
    if not len(predicted) == len(target) == len(error):
        raise ValueError(f"predicted, target and error differ in length: {len(predicted)}, {len(target)}, {len(error)}")
    if not len(target):
        raise ValueError("no galaxies to evaluate")
    if np.any(target <= 0) or np.any(predicted <= 0):
        raise ValueError("M/L targets and predictions must be positive (RMSLE takes their logarithm)")
    return predicted, target, error


def ml_metrics(predicted, target, error) -> dict[str, float]:
    """L1, L2, RMSLE (dex), median L1, the fraction within 0.15 dex, and the number of galaxies.

    Raises
    ------
    ValueError
        for arrays of different lengths, none at all, or a non-positive M/L.
    """
    predicted, target, error = _check(predicted, target, error)
    scaled = (predicted - target) / floored_error(target, error)
    dex = np.log10(predicted / target)
    return {
        "l1": float(np.mean(np.abs(scaled))),
        "l2": float(np.sqrt(np.mean(scaled**2))),
        "rmsle": float(np.sqrt(np.mean(dex**2))),
        "median_l1": float(np.median(np.abs(scaled))),
        "within_015_dex": float(np.mean(np.abs(dex) <= WITHIN_DEX)),
        "n": int(len(target)),
    }


def morphology_class(probabilities: np.ndarray) -> np.ndarray:
    """The paper's four classes from (N, 37) unconditional GZ2 probabilities (object array of names)."""
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    if probabilities.shape[1] != gz2.N_ANSWERS:
        raise ValueError(f"expected (N, {gz2.N_ANSWERS}) GZ2 probabilities, got shape {probabilities.shape}")
    classes = np.full(len(probabilities), "elliptical", dtype=object)
    undecided = np.ones(len(probabilities), bool)
    for name, answer, threshold in CLASS_RULES:
        hit = undecided & (probabilities[:, gz2.ANSWER_INDEX[answer]] > threshold)
        classes[hit] = name
        undecided &= ~hit
    return classes


def metrics_by_class(predicted, target, error, classes) -> dict[str, dict[str, float]]:
    """:func:`ml_metrics` for each morphology class present (classes in the paper's order)."""
    predicted, target, error = _check(predicted, target, error)
    classes = np.asarray(classes, dtype=object)
    return {
        name: ml_metrics(predicted[classes == name], target[classes == name], error[classes == name])
        for name in MORPHOLOGY_CLASSES
        if np.any(classes == name)
    }
