"""The M/L regressor of the paper's second stage: LightGBM behind the scikit-learn interface.

Three losses, each matching one of the paper's metrics (``pipeline.learning.metrics``):

* ``l1`` (the default and the paper's choice): LightGBM's L1 objective with sample weights
  1 / max(e, 0.05 t), which minimises exactly the weighted L1 (docs/stages.md);
* ``l2``: the L2 objective with weights 1 / e'^2 (the weighted L2);
* ``rmsle``: the L2 objective on log10(M/L) without weights (RMSLE in dex); predictions
  are transformed back.

Hyper-parameters default to the paper's: 40 leaves, at least 150 galaxies per leaf, 40%
of the features per tree, 80% bagging; the number of trees is set by early stopping on
a validation set when one is given.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from pipeline.learning.metrics import floored_error
from pipeline.learning.threads import gbm_threads

LOSSES = ("l1", "l2", "rmsle")


def sample_weights(loss: str, target: np.ndarray, error: np.ndarray | None) -> np.ndarray | None:
    """LightGBM sample weights that turn its objective into the loss's weighted metric (None: unweighted)."""
    if loss == "rmsle" or error is None:
        return None
    scale = floored_error(target, error)
    return 1.0 / scale if loss == "l1" else 1.0 / scale**2


class GBMRegressor(RegressorMixin, BaseEstimator):
    """LightGBM M/L regressor trained with the weighted L1, weighted L2 or RMSLE loss.

    ``fit(X, y, error=e, eval_set=(X_val, y_val, e_val))``: ``error`` holds the targets'
    1-sigma errors (Msun/Lsun_g); with ``eval_set`` the number of trees stops growing
    when the validation loss has not improved for ``early_stopping_rounds``. ``n_jobs``: threads of
    the fit, :func:`~pipeline.learning.threads.gbm_threads` when None.
    """

    def __init__(
        self,
        loss: str = "l1",
        num_leaves: int = 40,
        min_child_samples: int = 150,
        colsample_bytree: float = 0.4,
        subsample: float = 0.8,
        learning_rate: float = 0.05,
        n_estimators: int = 3000,
        early_stopping_rounds: int = 100,
        random_state: int = 0,
        n_jobs: int | None = None,
        max_bin: int = 255,
    ):
        self.loss = loss
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.subsample = subsample
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.max_bin = max_bin

    def _params(self) -> dict:
        return {
            "objective": "l1" if self.loss == "l1" else "l2",
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.colsample_bytree,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "learning_rate": self.learning_rate,
            "seed": self.random_state,
            "num_threads": self.n_jobs or gbm_threads(),
            "max_bin": self.max_bin,
            "verbosity": -1,
        }

    def _label(self, y: np.ndarray) -> np.ndarray:
        return np.log10(y) if self.loss == "rmsle" else y

    def fit(self, X, y, error=None, eval_set=None, feature_names=None):
        """Train; ``eval_set`` is (X_val, y_val, error_val) for early stopping."""
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=float)
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("M/L targets must be positive and finite")
        if self.loss != "rmsle" and error is None:
            raise ValueError(f"the {self.loss} loss weights galaxies by their target errors: pass error=")
        names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(X.shape[1])]
        weights = sample_weights(self.loss, y, error)
        train = lgb.Dataset(
            X, self._label(y), weight=weights, feature_name=names, free_raw_data=False, params={"max_bin": self.max_bin}
        )
        valid_sets, callbacks = [], []
        if eval_set is not None:
            X_val, y_val, e_val = eval_set
            y_val = np.asarray(y_val, dtype=float)
            valid = lgb.Dataset(
                np.asarray(X_val, dtype=np.float32),
                self._label(y_val),
                weight=sample_weights(self.loss, y_val, e_val),
                reference=train,
            )
            valid_sets = [valid]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.booster_ = lgb.train(
            self._params(), train, num_boost_round=self.n_estimators, valid_sets=valid_sets, callbacks=callbacks
        )
        self.best_iteration_ = self.booster_.best_iteration or self.booster_.current_iteration()
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted M/L (Msun/Lsun_g)."""
        raw = self.booster_.predict(np.asarray(X, dtype=np.float32), num_iteration=self.best_iteration_)
        return 10.0**raw if self.loss == "rmsle" else raw


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half of the total weight lies (minimises the weighted L1)."""
    order = np.argsort(values)
    values, weights = np.asarray(values, dtype=float)[order], np.asarray(weights, dtype=float)[order]
    cumulative = np.cumsum(weights)
    return float(values[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


class ConstantML(RegressorMixin, BaseEstimator):
    """The paper's constant baseline: the weighted median of the training M/L."""

    def fit(self, X, y, error=None, eval_set=None, feature_names=None):  # noqa: ARG002 - the shared interface
        y = np.asarray(y, dtype=float)
        weights = np.ones_like(y) if error is None else 1.0 / floored_error(y, error)
        self.value_ = weighted_median(y, weights)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        return np.full(len(X), self.value_)
