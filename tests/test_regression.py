"""Feature assembly, the named models, the significance tests and the seven experiments, on a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.images.photometry import nanomaggies_to_lsun
from pipeline.jsonsafe import json_safe
from pipeline.learning.data import band_set_names, flux_name
from pipeline.learning.experiments import EXPERIMENTS, ExperimentContext, run_experiment
from pipeline.learning.named_models import NAMED, NAMED_MODELS
from pipeline.learning.powerlaw import PowerLawGI
from pipeline.learning.regression import fit_model, score
from pipeline.learning.significance import compare_l1
from tests.learning_synth import EXPERIMENT_TABLE_ROWS, GBM_TEST_PARAMS, synthetic_learning_data


@pytest.fixture(scope="module")
def synth():
    return synthetic_learning_data()


@pytest.fixture(scope="module")
def named(synth):
    data, _ = synth
    return {spec.name: fit_model(spec, data, params=GBM_TEST_PARAMS) for spec in NAMED_MODELS}


def test_groups_bands_fluxes_and_classes(synth):
    data, _ = synth
    assert band_set_names("gi") == ["redshift", "L_g", "L_i", "L_g/L_i"]
    assert data.feature_names((), "g") == ["redshift", "L_g"]
    with pytest.raises(ValueError, match="always with g"):
        band_set_names("ri")
    with pytest.raises(ValueError, match="no feature group"):
        data.feature_names(("colour_of_the_sky",))
    # Flux features are the luminosity features without the 4 pi D_L^2 factor.
    lum, flux = data.matrix(["lum_sum"])[:, 0], data.matrix([flux_name("lum_sum")])[:, 0]
    distance = 4300.0 * data.matrix(["redshift"])[:, 0]
    assert np.allclose(flux * nanomaggies_to_lsun(1.0, distance), lum, rtol=1e-4)
    # g - i from the band luminosities: L_g / L_i = 10**(-0.4 (g - i - (M_g - M_i))).
    assert set(data.morphology) == {"disk", "edge-on", "elliptical"}
    assert len(data.rows("train")) + len(data.rows("val")) + len(data.rows("test")) == len(data.galaxy_ids)


def test_named_models_rank_as_the_paper_finds(synth, named):
    data, _ = synth
    test = data.rows("test")
    l1 = {name: score(model, data, test)[0]["l1"] for name, model in named.items()}
    # Colour explains most of M/L, morphology the rest; luminosity alone little.
    assert l1["gi_morph"] < 0.7 * l1["gi"], l1
    assert l1["gi"] < 0.8 * l1["lgz"], l1
    assert l1["g_morph"] < l1["lgz"] < l1["constant"], l1
    assert l1["powerlaw_gi"] < l1["lgz"], l1
    # The morphology models looked at the top 50 features and kept the better on validation.
    selection = named["g_morph"].selection
    assert selection["all_features"] > 50 and selection["kept"] in {"top", "all"}
    kept = named["g_morph"].features
    assert len(kept) == (50 if selection["kept"] == "top" else selection["all_features"])
    # The disk column is the most important CNN feature.
    importance = named["gi_morph"].importance
    cnn_ranked = sorted((v, k) for k, v in importance.items() if k.startswith("cnn."))
    assert cnn_ranked[-1][1] == "cnn.c07", cnn_ranked[-3:]
    assert named["gi_morph"].describe()["features"] == named["gi_morph"].features


def test_per_class_scores_cover_the_classes(synth, named):
    data, _ = synth
    metrics, per_class, l1 = score(named["gi_morph"], data, data.rows("test"))
    assert set(per_class) == {"disk", "edge-on", "elliptical"}
    assert sum(c["n"] for c in per_class.values()) == metrics["n"] == len(l1)
    assert metrics["n_unpredicted"] == 0


def test_cross_validation_chooses_from_the_grid(synth):
    data, _ = synth
    grid = {"num_leaves": (4, 15), "min_child_samples": (20,)}
    fitted = fit_model(NAMED["gi"], data, params=GBM_TEST_PARAMS, grid=grid, importance=False)
    assert len(fitted.cv) == 2 and fitted.cv[0]["cv_l1"] <= fitted.cv[1]["cv_l1"]
    assert fitted.params["num_leaves"] == fitted.cv[0]["params"]["num_leaves"]


def test_power_law_losses_and_unusable_colours():
    rng = np.random.default_rng(3)
    gi = rng.uniform(0.3, 1.3, 400)
    X = np.column_stack([np.full(400, 16.0), 16.0 - gi])
    ml = 10 ** (-0.8 + 1.2 * gi)
    for loss in ("l1", "l2", "rmsle"):
        model = PowerLawGI(loss=loss).fit(X, ml, error=0.1 * ml)
        assert model.a_ == pytest.approx(-0.8, abs=1e-3) and model.b_ == pytest.approx(1.2, abs=1e-3), loss
    X[:5, 1] = np.nan
    model = PowerLawGI().fit(X, ml, error=0.1 * ml)
    assert model.unusable_.tolist() == [0, 1, 2, 3, 4]
    assert np.isnan(model.predict(X[:5])).all()
    with pytest.raises(ValueError, match="unknown loss"):
        PowerLawGI(loss="huber").fit(X, ml)


def test_significance_tests():
    rng = np.random.default_rng(0)
    worse = rng.exponential(1.0, 500)
    clear = compare_l1(0.7 * worse, worse, resamples=20_000)
    # no resample favours the worse model: p is the least a 20,000-resample bootstrap can show, never 0
    assert clear["ks_pvalue"] < 1e-4 and clear["bootstrap_pvalue"] == pytest.approx(1 / 20_001)
    backwards = compare_l1(worse, 0.7 * worse, resamples=1000)  # one-sided: the worse model is not "better"
    assert backwards["ks_pvalue"] > 0.5 and backwards["bootstrap_pvalue"] == 1.0
    assert 0 < clear["bootstrap_ci95"][0] < clear["mean_l1_gain"] < clear["bootstrap_ci95"][1]
    same = compare_l1(worse + np.resize([0.1, -0.1], 500), worse, resamples=20_000)  # mean gain exactly 0
    assert same["ks_pvalue"] > 0.05 and 0.4 < same["bootstrap_pvalue"] < 0.6
    with_gaps = worse.copy()
    with_gaps[:3] = np.nan
    assert compare_l1(with_gaps, worse, resamples=1000)["n_unpaired"] == 3
    with pytest.raises(ValueError, match="differ in shape"):
        compare_l1(worse[:3], worse)


def test_every_experiment_runs_and_reproduces_the_findings(synth, named):
    data, _ = synth
    steps = []
    ctx = ExperimentContext(data, dict(named), on_step=steps.append)
    tables = {name: run_experiment(name, ctx) for name in EXPERIMENTS}
    counts = {name: len(rows) for name, rows in tables.items()}
    assert counts == EXPERIMENT_TABLE_ROWS
    assert steps  # progress was reported for the models fitted
    l1 = {row.method: row.metrics["l1"] for row in tables["ablation"]}
    assert l1["all"] < l1["without CNNs"]  # morphology matters here
    losses = {(row.method, row.loss) for row in tables["losses"]}
    assert len(losses) == 9
    bands = {
        (row.details["bands"], row.details["morphology"], row.details.get("colour_images", False)): row.metrics["l1"]
        for row in tables["band_sets"]
    }
    assert bands[("gi", True, False)] < bands[("gi", False, False)] < bands[("g", False, False)]
    assert bands[("gi", True, True)] < bands[("gi", False, False)]  # gi_images: g, i + morphology with CNN4 on colour
    # gi_images learns from and predicts the galaxies with CNN4-on-colour features only.
    test = data.rows("test")
    without_i = int((~data.covered(("cnn4gi",), test)).sum())
    assert 0 < without_i < len(test) and score(named["gi_images"], data, test)[0]["n_unpredicted"] == without_i
    assert named["gi_images"].n_train == int(data.covered(("cnn4gi",), data.rows("train")).sum())
    images = tables["colour_images"]
    assert [r.method for r in images] == ["CNN4 on g (gi_morph)", "CNN4 on g and g - i (gi_images)", "both CNN4s"]
    assert {r.metrics["n"] for r in images} == {len(test) - without_i}  # the same galaxies: those with i
    gi_gain = tables["significance"][0]
    assert gi_gain.method == "gi_morph over gi" and gi_gain.details["ks_pvalue"] < 0.01
    assert gi_gain.details["bootstrap_resamples"] == 100_000
    assert (
        gi_gain.details["per_class_gain"]["disk"]["mean_l1_gain"]
        > gi_gain.details["per_class_gain"]["elliptical"]["mean_l1_gain"]
    )
    half = tables["half_data"]
    assert half[1].details["n_train"] == half[0].details["n_train"] // 2
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("table9", ctx)


def test_json_safe_turns_nan_into_null():
    assert json_safe({"a": np.float32(np.nan), "b": [np.int64(2), np.inf], "c": np.array([1.5])}) == {
        "a": None,
        "b": [2, None],
        "c": [1.5],
    }
