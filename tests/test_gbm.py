"""The M/L regressor and its baselines (scikit-learn interface), on data with a known signal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from pipeline.learning.gbm import ConstantML, GBMRegressor, weighted_median
from pipeline.learning.metrics import ml_metrics
from pipeline.learning.powerlaw import PowerLawGI

pytestmark = pytest.mark.smoke


def known_signal(n: int, seed: int):
    """M/L = 10**(0.2 + 0.8 x0 - 0.3 x1) with 10% errors and noise; x2 is irrelevant."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    ml = 10 ** (0.2 + 0.8 * X[:, 0] - 0.3 * X[:, 1])
    error = 0.1 * ml
    return X, ml * (1 + rng.normal(0, 0.05, n)).clip(0.5), error


@pytest.mark.parametrize("loss", ["l1", "l2", "rmsle"])
def test_each_loss_learns_the_signal_and_stops_early(loss):
    X, y, e = known_signal(3000, 0)
    Xv, yv, ev = known_signal(600, 1)
    Xt, yt, et = known_signal(600, 2)
    model = GBMRegressor(loss=loss, min_child_samples=20, learning_rate=0.1, n_estimators=2000, early_stopping_rounds=30)
    model.fit(X, y, error=e, eval_set=(Xv, yv, ev), feature_names=["x0", "x1", "x2"])
    assert model.best_iteration_ < 2000  # early stopping on the validation set ended it
    predicted = model.predict(Xt)
    gbm = ml_metrics(np.clip(predicted, 1e-3, None), yt, et)
    constant = ml_metrics(ConstantML().fit(X, y, error=e).predict(Xt), yt, et)
    assert gbm["l1"] < 0.35 * constant["l1"], (gbm, constant)
    assert gbm["rmsle"] < 0.07  # dex; the targets' own 5% noise is 0.02 dex
    assert list(model.feature_names_in_) == ["x0", "x1", "x2"]
    assert clone(model).get_params()["loss"] == loss  # a scikit-learn estimator


def test_the_regressor_refuses_bad_input_clearly():
    X, y, e = known_signal(50, 0)
    with pytest.raises(ValueError, match="unknown loss"):
        GBMRegressor(loss="huber").fit(X, y, error=e)
    with pytest.raises(ValueError, match="pass error="):
        GBMRegressor(loss="l1").fit(X, y)
    with pytest.raises(ValueError, match="positive and finite"):
        GBMRegressor().fit(X, -y, error=e)


def test_the_fits_thread_count_comes_from_the_setting_and_a_bad_one_is_refused(monkeypatch):
    X, y, e = known_signal(300, 0)
    monkeypatch.delenv("MORPHOMASS_GBM_THREADS", raising=False)
    assert GBMRegressor(n_estimators=5).fit(X, y, e).booster_.params["num_threads"] == 2
    monkeypatch.setenv("MORPHOMASS_GBM_THREADS", "1")  # read at each fit, not at import
    assert GBMRegressor(n_estimators=5).fit(X, y, e).booster_.params["num_threads"] == 1
    assert GBMRegressor(n_estimators=5, n_jobs=3).fit(X, y, e).booster_.params["num_threads"] == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MORPHOMASS_GBM_THREADS", bad)
        with pytest.raises(ValueError, match="MORPHOMASS_GBM_THREADS"):
            GBMRegressor(n_estimators=5).fit(X, y, e)


def test_weighted_median_by_hand():
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])) == 2.0
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 5.0])) == 3.0
    # The constant baseline weighs galaxies by 1 / e': errors 0.1, 10, 10 give weights 10, 0.1, 0.1,
    # so the first galaxy holds over half the weight.
    constant = ConstantML().fit(np.zeros((3, 1)), [1.0, 2.0, 3.0], error=[0.1, 10.0, 10.0])
    assert constant.value_ == 1.0 and constant.predict(np.zeros((2, 1))).tolist() == [1.0, 1.0]


def test_power_law_recovers_its_parameters_and_reports_unusable_colours():
    rng = np.random.default_rng(4)
    g = rng.uniform(15, 17, 500)
    i = g - rng.uniform(0.3, 1.5, 500)
    ml = 10 ** (-0.9 + 1.2 * (g - i))
    X = np.column_stack([g, i])
    X[[3, 7], 1] = np.nan  # two galaxies without an i magnitude
    model = PowerLawGI().fit(X, ml, error=0.1 * ml)
    assert model.a_ == pytest.approx(-0.9, abs=1e-3) and model.b_ == pytest.approx(1.2, abs=1e-3)
    assert model.unusable_.tolist() == [3, 7]
    assert np.isnan(model.predict(X[[3]])).all()
    with pytest.raises(ValueError, match="two columns"):
        PowerLawGI().fit(np.zeros((5, 3)), np.ones(5))


def test_cross_validation_prefers_leaves_the_data_can_fill():
    from pipeline.learning.model_selection import cross_validate_grid

    X, y, e = known_signal(2000, 5)
    base = GBMRegressor(learning_rate=0.2, n_estimators=400, early_stopping_rounds=20)
    results = cross_validate_grid(X, y, e, {"min_child_samples": (20, 900)}, base=base)
    assert [r.params["min_child_samples"] for r in results] == [20, 900]  # 900 of 1,600 per fold: two leaves at most
    assert results[0].cv_l1 < results[1].cv_l1 and 0 < results[0].n_trees <= 400


def test_permutation_importance_finds_the_features_that_matter():
    from pipeline.learning.model_selection import permutation_l1_importance, top_features

    X, y, e = known_signal(3000, 6)
    Xv, yv, ev = known_signal(800, 7)
    model = GBMRegressor(min_child_samples=20, learning_rate=0.1, n_estimators=300).fit(X, y, error=e)
    importance = permutation_l1_importance(model, Xv, yv, ev, ["x0", "x1", "x2"])
    assert importance["x0"] > importance["x1"] > 10 * abs(importance["x2"])  # x0 has the steeper slope; x2 is noise
    assert top_features(importance, k=2) == ["x0", "x1"]
