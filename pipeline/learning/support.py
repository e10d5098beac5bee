"""Is a galaxy like the ones a model was trained on? The out-of-selection flag.

The paper warns that galaxies unlike its Malmquist-biased training sample (fainter,
farther, rarer) may be predicted badly. A prediction is flagged, with every reason that
applies, when the galaxy's

* redshift, g-band luminosity or physical size (the cutout's field of view in kpc, which
  follows D25) lies outside the range spanned by the training galaxies, or
* feature vector is far from the training set: the mean distance to its 5 nearest
  training galaxies in the model's standardised input space exceeds the 99th percentile
  of that distance over the validation split, or
* features are mostly missing (its image failed preprocessing, or it has no CNN features),
  so the model predicts from almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.neighbors import NearestNeighbors

NEIGHBOURS = 5
DISTANCE_QUANTILE = 0.99
#: At most this many training galaxies are kept for the distance test (a random subset).
MAX_REFERENCE = 20_000
#: More missing features than this fraction is a reason of its own.
MAX_MISSING = 0.5


@dataclass
class SupportModel:
    """Fitted on the training split's physical ranges and features; thresholded on validation."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    centre: np.ndarray | None = None
    scale: np.ndarray | None = None
    fill: np.ndarray | None = None
    neighbours: NearestNeighbors | None = None
    threshold: float = np.inf

    def fit(self, physical_train: dict[str, np.ndarray], X_train, X_val, seed: int = 0) -> SupportModel:
        for name, values in physical_train.items():
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                self.ranges[name] = (float(values.min()), float(values.max()))
        X_train = np.asarray(X_train, dtype=float)
        if X_train.shape[1]:
            self.fill = np.nanmedian(X_train, axis=0)
            self.fill = np.where(np.isfinite(self.fill), self.fill, 0.0)
            filled = self._filled(X_train)
            self.centre, self.scale = filled.mean(axis=0), filled.std(axis=0)
            self.scale = np.where(self.scale > 0, self.scale, 1.0)
            reference = self._standard(X_train)
            if len(reference) > MAX_REFERENCE:
                reference = reference[np.random.default_rng(seed).choice(len(reference), MAX_REFERENCE, replace=False)]
            self.neighbours = NearestNeighbors(n_neighbors=min(NEIGHBOURS, len(reference))).fit(reference)
            self.threshold = float(np.quantile(self.distance(X_val), DISTANCE_QUANTILE))
        return self

    def _filled(self, X) -> np.ndarray:
        X = np.array(X, dtype=float)
        missing = ~np.isfinite(X)
        X[missing] = np.broadcast_to(self.fill, X.shape)[missing]
        return X

    def _standard(self, X) -> np.ndarray:
        return (self._filled(X) - self.centre) / self.scale

    def distance(self, X) -> np.ndarray:
        """Mean distance to the nearest training galaxies, in standard deviations of the features."""
        if self.neighbours is None:
            return np.zeros(len(X))
        distances, _ = self.neighbours.kneighbors(self._standard(X))
        return distances.mean(axis=1)

    def reasons(self, physical: dict[str, np.ndarray], X) -> list[list[str]]:
        """Every reason each galaxy is outside the training support (an empty list: inside)."""
        n = len(next(iter(physical.values()))) if physical else len(X)
        out: list[list[str]] = [[] for _ in range(n)]
        for name, (lo, hi) in self.ranges.items():
            values = np.asarray(physical.get(name, np.full(n, np.nan)), dtype=float)
            for i in np.flatnonzero(values < lo):
                out[i].append(f"{name} {values[i]:.3g} below the training range ({lo:.3g}-{hi:.3g})")
            for i in np.flatnonzero(values > hi):
                out[i].append(f"{name} {values[i]:.3g} above the training range ({lo:.3g}-{hi:.3g})")
        X = np.asarray(X, dtype=float)
        if X.shape[1]:
            missing = (~np.isfinite(X)).mean(axis=1)
            for i in np.flatnonzero(missing > MAX_MISSING):
                out[i].append(f"{missing[i]:.0%} of its features missing (no preprocessing or CNN features)")
        distance = self.distance(X)
        for i in np.flatnonzero(distance > self.threshold):
            out[i].append(f"features far from the training set ({distance[i]:.3g} > {self.threshold:.3g})")
        return out
