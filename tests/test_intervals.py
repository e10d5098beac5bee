"""Calibrated intervals, stellar-mass intervals and the out-of-support flag, on a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.learning.intervals import calibration, conformal_quantile, quantile_bins, stellar_mass_interval
from pipeline.learning.named_models import NAMED
from pipeline.learning.regression import fit_model
from pipeline.learning.support import SupportModel
from tests.learning_synth import GBM_TEST_PARAMS, synthetic_learning_data


@pytest.fixture(scope="module")
def big():
    return synthetic_learning_data(3000, seed=5)[0]


@pytest.fixture(scope="module")
def fitted(big):
    names = ("constant", "powerlaw_gi", "gi", "gi_morph")
    return {name: fit_model(NAMED[name], big, params=GBM_TEST_PARAMS, importance=False) for name in names}


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 10, dtype=float)  # 9 scores
    assert conformal_quantile(scores, 0.68) == 7.0  # ceil(10 x 0.68) = 7th smallest
    assert conformal_quantile(scores, 0.95) == 9.0
    with pytest.raises(ValueError, match="no calibration"):
        conformal_quantile(np.array([np.nan]), 0.68)


@pytest.mark.parametrize("name", ["constant", "powerlaw_gi", "gi", "gi_morph"])
def test_intervals_cover_as_promised_on_held_out_galaxies(big, fitted, name):
    test = big.rows("test")
    u = fitted[name].uncertainty(big, test)
    assert np.all(u["ml_lo68"] <= u["ml"]) and np.all(u["ml"] <= u["ml_hi68"])
    assert np.all(u["ml_lo95"] <= u["ml_lo68"]) and np.all(u["ml_hi68"] <= u["ml_hi95"])
    intervals = {0.68: (u["ml_lo68"], u["ml_hi68"]), 0.95: (u["ml_lo95"], u["ml_hi95"])}
    report = calibration(intervals, big.target[test], big.error[test], {"by_class": big.morphology[test]})
    assert abs(report["coverage_68"] - 0.68) < 0.06 and abs(report["coverage_95"] - 0.95) < 0.03, report
    assert report["width_95_dex"] > report["width_68_dex"] > 0
    assert sum(entry["n"] for entry in report["by_class"].values()) == len(test)


@pytest.fixture(scope="module")
def other():
    """Galaxies of another draw and size: no model saw them, no choice was made on them."""
    return synthetic_learning_data(1500, seed=9)[0]


#: Coverage tolerance on ``other`` (1,500 galaxies, about 1,000 per level's classes of 100+):
#: three standard deviations of the test's binomial noise and of the calibration quantile's
#: (2,550 out-of-fold galaxies), sqrt(0.68 x 0.32 x (1/1500 + 1/2550)) = 0.015 at 68%; per
#: class the same with the class's galaxies.
def tolerance(level: float, n_test: int, n_calibration: int) -> float:
    return 3 * np.sqrt(level * (1 - level) * (1 / n_test + 1 / n_calibration))


@pytest.mark.parametrize("name", ["constant", "powerlaw_gi", "gi", "gi_morph"])
def test_cross_conformal_intervals_hold_on_another_draw_overall_and_per_class(big, fitted, other, name):
    model = fitted[name]
    on = model.intervals.calibrated_on
    assert model.intervals.method == "cross-conformal" and on["folds"] == 5
    assert on["galaxies"] == len(big.rows("train")) + len(big.rows("val"))  # every train + val galaxy calibrates
    rows = np.flatnonzero(np.isfinite(other.target))
    u = model.uncertainty(other, rows)
    usable = np.isfinite(u["ml"])
    target, classes = other.target[rows][usable], other.morphology[rows][usable]
    for level in (0.68, 0.95):
        key = round(level * 100)
        inside = (u[f"ml_lo{key}"][usable] <= target) & (target <= u[f"ml_hi{key}"][usable])
        assert abs(inside.mean() - level) < tolerance(level, len(inside), on["galaxies"]), (level, inside.mean())
        for cls, n_calibration in on["own_calibration"].items():
            hit = classes == cls
            if hit.sum() >= 50:
                assert abs(inside[hit].mean() - level) < tolerance(level, hit.sum(), n_calibration), (cls, level)


def test_out_of_fold_predictions_come_from_refits_that_did_not_see_the_galaxy(big, fitted):
    model = fitted["gi_morph"]
    ids, oof = model.oof["galaxy_ids"], model.oof["ml"]
    learning = set(big.galaxy_ids[np.concatenate([big.rows("train"), big.rows("val")])].tolist())
    assert set(ids.tolist()) == learning
    position = {int(g): i for i, g in enumerate(big.galaxy_ids)}
    rows = np.array([position[int(g)] for g in ids])
    in_sample = model.predict(big, rows)
    train = np.isin(rows, big.rows("train"))
    # The final model fits its training galaxies better than refits that left each one out.
    l1_in, l1_out = (np.mean(np.abs(np.log10(p[train] / big.target[rows][train]))) for p in (in_sample, oof))
    assert l1_out > l1_in
    assert "cross-conformal" in model.intervals.describe() and "out-of-fold" in model.intervals.describe()


def test_galaxy_dependent_intervals_are_sharper_than_a_constant_width(big, fitted):
    test = big.rows("test")
    cqr = fitted["gi_morph"].uncertainty(big, test)
    widths = np.log10(cqr["ml_hi68"] / cqr["ml_lo68"])
    constant = fitted["constant"].uncertainty(big, test)
    assert np.median(widths) < 0.5 * np.median(np.log10(constant["ml_hi68"] / constant["ml_lo68"]))
    assert np.ptp(widths) > 0  # not one width for all


def test_stellar_mass_interval_adds_the_magnitude_error():
    lo, hi = stellar_mass_interval(np.array([1.0]), np.array([4.0]), np.array([2.0]), np.array([1e10]), np.array([0.0]), 1.0)
    assert lo[0] == pytest.approx(1e10) and hi[0] == pytest.approx(4e10)  # no magnitude error: M/L interval x L
    lo, hi = stellar_mass_interval(np.array([2.0]), np.array([2.0]), np.array([2.0]), np.array([1e10]), np.array([0.25]), 1.0)
    assert np.log10(hi[0] / 2e10) == pytest.approx(0.1) and np.log10(2e10 / lo[0]) == pytest.approx(0.1)  # 0.4 x 0.25 dex


def test_out_of_support_galaxies_are_flagged_with_their_reasons(big, fitted):
    import copy

    fitted = fitted["gi_morph"]
    big = copy.deepcopy(big)  # altered below
    test = big.rows("test")
    inside = fitted.uncertainty(big, test)["reasons"]
    assert np.mean([bool(r) for r in inside]) < 0.1  # most held-out galaxies are like the training ones
    odd = test[:4]
    index = big.index
    big.columns[odd[0], index["redshift"]] = 0.5  # far beyond the sample
    big.lum_g[odd[1]] = 1e6  # a dwarf far below the training luminosities
    big.columns[odd[2], [index[n] for n in fitted.features if n.startswith("cnn")]] = 40.0  # features unlike any galaxy
    big.columns[odd[3], [index[n] for n in fitted.features]] = np.nan  # nothing measured
    reasons = fitted.uncertainty(big, odd)["reasons"]
    assert any("redshift 0.5 above" in r for r in reasons[0]), reasons[0]
    assert any("luminosity 1e+06 below" in r for r in reasons[1]), reasons[1]
    assert any("features far from the training set" in r for r in reasons[2]), reasons[2]
    assert any("features missing" in r for r in reasons[3]), reasons[3]


def test_support_ranges_and_quantile_bins():
    support = SupportModel().fit({"redshift": np.array([0.02, 0.1])}, np.zeros((5, 0)), np.zeros((2, 0)))
    reasons = support.reasons({"redshift": np.array([0.05, 0.2, np.nan])}, np.zeros((3, 0)))
    assert reasons[0] == [] and "above" in reasons[1][0] and reasons[2] == []
    labels = quantile_bins(np.arange(8.0), 4, "z")
    assert len(set(labels)) == 4 and labels[0] == "z 0-1.75"
