"""The colour baseline: a power law log10(M/L) = a + b (g - i) (Zibetti et al. 2009 form).

Fitted by minimising the weighted L1 (docs/stages.md) on the training set, as the paper does
(its Sect. 4.3); the weighted L2 and RMSLE losses of its Table B.1 are there too.
Galaxies whose g or i magnitude is unusable cannot have a colour: they are
counted and listed (``unusable_``), never silently dropped, and predicted as NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin

from pipeline.learning.gbm import LOSSES
from pipeline.learning.metrics import floored_error


class PowerLawGI(RegressorMixin, BaseEstimator):
    """M/L = 10**(a + b (g - i)); ``X`` has the columns (mag_g, mag_i) in AB mag."""

    def __init__(self, loss: str = "l1"):
        self.loss = loss

    def fit(self, X, y, error=None, eval_set=None, feature_names=None):  # noqa: ARG002 - the shared interface
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        if X.ndim != 2 or X.shape[1] != 2:
            raise ValueError(f"the g-i power law takes two columns (mag_g, mag_i), got shape {X.shape}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        colour = X[:, 0] - X[:, 1]
        usable = np.isfinite(colour) & np.isfinite(y) & (y > 0)
        self.unusable_ = np.flatnonzero(~usable)
        if usable.sum() < 2:
            raise ValueError(f"only {int(usable.sum())} galaxies have a usable g - i colour and M/L")
        colour, y = colour[usable], y[usable]
        scale = np.ones_like(y) if error is None else floored_error(y, np.asarray(error, dtype=float)[usable])
        start = np.polyfit(colour, np.log10(y), 1)[::-1]  # least squares in log space: the RMSLE optimum
        power = 1 if self.loss == "l1" else 2

        def loss(params: np.ndarray) -> float:
            return float(np.mean((np.abs(10.0 ** (params[0] + params[1] * colour) - y) / scale) ** power))

        if self.loss != "rmsle":
            start = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 5000}).x
        self.a_, self.b_ = (float(v) for v in start)
        self.n_features_in_ = 2
        return self

    def predict(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return 10.0 ** (self.a_ + self.b_ * (X[:, 0] - X[:, 1]))
