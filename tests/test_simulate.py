"""The synthetic survey: realism targets, determinism, faults, and the paper's signal."""

from __future__ import annotations

import filecmp

import lightgbm as lgb
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline import gz2
from pipeline.bundles import reader as bundle
from pipeline.images.photometry import luminosity_distance_mpc, luminosity_lsun
from pipeline.images.preprocess import ImageMeta, preprocess_cutout
from pipeline.images.stars import prior_pixels
from pipeline.simulate.montage import write_montage
from pipeline.simulate.population import CLASSES, draw_population
from pipeline.simulate.survey import FAULT_KINDS, simulate_survey


@pytest.fixture(scope="module")
def population():
    return draw_population(600, seed=21)


def test_population_meets_the_realism_targets(population):
    z = population["z"]
    assert 0.01 <= z.min() and z.max() <= 0.3
    assert 0.035 < np.median(z) < 0.065  # paper: 0.05
    kpc = population["kpc_per_pixel"]
    assert 0.3 < np.median(kpc) < 0.55  # paper: 0.44 (0.08 - 2.44)
    assert kpc.min() > 0.05
    assert np.all(population["d25_arcmin"] > 0.4)
    assert np.all(population["mag_r_true"] < 17.77)
    learn = population["chi2_r"] < 5
    ml = population["ml_g"][learn]
    assert 2.0 < np.median(ml) < 3.5  # paper: 2.7
    assert ml.min() < 0.6 and ml.max() > 7  # paper: 0.09 - 16.6
    assert 0.01 < np.mean(~learn) < 0.08  # a few percent of poor SED fits
    rel = population["ml_g_err"] / population["ml_g"]
    assert 0.03 <= rel.min() and rel.max() <= 0.25


def _two_gaussian_fit(x: np.ndarray, iterations: int = 300):
    """EM fit of a two-Gaussian mixture; returns means, sigmas, weights and the log-likelihood gain over one Gaussian."""
    mu, sd, w = np.percentile(x, [25, 75]), np.full(2, x.std() / 2), np.full(2, 0.5)
    for _ in range(iterations):
        pdf = w * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) / sd
        resp = pdf / pdf.sum(axis=1, keepdims=True)
        nk = resp.sum(axis=0)
        w, mu = nk / len(x), (resp * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk)
    two = np.log((w * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))).sum(axis=1)).sum()
    one = np.sum(-0.5 * ((x - x.mean()) / x.std()) ** 2 - np.log(x.std() * np.sqrt(2 * np.pi)))
    return mu, sd, w, two - one


def test_ml_is_bimodal_between_early_types_and_disks(population):
    ml, cls = population["ml_g"], population["class"]
    assert np.median(ml[np.isin(cls, ["elliptical", "lenticular"])]) > 1.8 * np.median(ml[cls == "spiral"])
    learn = population["chi2_r"] < 5
    mu, _, weights, gain = _two_gaussian_fit(np.log10(ml[learn]))
    assert gain > 1.5 * np.log(learn.sum())  # BIC prefers two modes over one
    assert abs(mu[1] - mu[0]) > np.log10(2)  # modes at least a factor 2 apart in M/L
    assert weights.min() > 0.15


def test_edge_on_disks_look_old_in_colour_because_of_dust(population):
    spiral = population["class"] == "spiral"
    edge_on = spiral & (population["inclination_deg"] > 75)
    face_on = spiral & (population["inclination_deg"] < 45)
    assert np.median(population["a_g"][edge_on]) > np.median(population["a_g"][face_on]) + 0.4
    assert np.median(population["gi_true"][edge_on]) > np.median(population["gi_true"][face_on])
    assert np.median(population["ml_true"][edge_on]) > 1.5 * np.median(population["ml_true"][face_on])


def test_colour_tracks_ml_with_scatter(population):
    r = np.corrcoef(np.log10(population["ml_true"]), population["gi_true"])[0, 1]
    assert 0.7 < r < 0.99


def _weighted_l1(features: np.ndarray, y: np.ndarray, err: np.ndarray, train: np.ndarray) -> float:
    params = {
        "objective": "l1",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "seed": 1,
        "deterministic": True,
        "num_threads": 1,
    }
    model = lgb.train(params, lgb.Dataset(features[train], y[train], weight=1 / err[train]), 300)
    test = ~train
    return float(np.mean(np.abs(model.predict(features[test]) - y[test]) / err[test]))


def test_morphology_carries_ml_signal_beyond_redshift_and_luminosity():
    pop = draw_population(1200, seed=5)
    learn = pop["chi2_r"] < 5
    y = pop["ml_g"][learn]
    err = np.maximum(pop["ml_g_err"][learn], 0.05 * y)
    log_lum = np.log10(luminosity_lsun(pop["mag_g"], luminosity_distance_mpc(pop["z"]), "g"))[learn]
    morph = np.array([CLASSES.index(c) for c in pop["class"]])[learn]
    train = np.random.default_rng(0).random(len(y)) < 0.7
    base = np.column_stack([pop["z"][learn], log_lum])
    l1_plain = _weighted_l1(base, y, err, train)
    l1_morph = _weighted_l1(np.column_stack([base, morph]), y, err, train)
    assert l1_morph < 0.75 * l1_plain  # clearly better with morphology
    assert l1_morph > 1.0  # but not trivially easy: the targets are noisy


def test_bundle_has_every_file_and_the_design_headers(synthetic_bundle, synthetic_truth):
    for name in ("catalogue.csv", "gswlc.dat", "gz2.csv", "stars.csv", "truth.csv"):
        assert (synthetic_bundle / name).stat().st_size > 0
    objid = next(o for o, f in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True) if not f)
    with fits.open(synthetic_bundle / "images" / f"{objid}_g.fits") as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert header["BUNIT"] == "nanomaggy" and header["BAND"] == "g"
    assert header["PIXSCALE"] == pytest.approx(0.396)
    assert 0.8 < header["PSF_FWHM"] < 2.5
    assert WCS(header).has_celestial
    catalogue = Table.read(synthetic_bundle / "catalogue.csv", format="ascii.csv")
    row = catalogue[catalogue["objid"] == objid][0]
    centre = WCS(header).pixel_to_world_values((data.shape[1] - 1) / 2, (data.shape[0] - 1) / 2)
    assert centre[0] == pytest.approx(row["ra"], abs=1e-6)
    # Field of view 1.125 x D25 at 0.396"/px.
    assert data.shape[0] == pytest.approx(1.125 * row["d25_arcmin"] * 60 / 0.396, abs=2.5)
    gswlc = bundle.read_gswlc(synthetic_bundle / "gswlc.dat")
    assert len(gswlc.colnames) == 24


def test_gz2_votes_cover_most_galaxies_and_follow_the_tree(synthetic_bundle, synthetic_truth):
    objid, fractions, rejections = bundle.read_gz2(synthetic_bundle / "gz2.csv")
    assert not rejections
    assert 0.65 < len(objid) / len(synthetic_truth) < 0.95  # about 80%
    for task in gz2.TASKS:
        block = fractions[:, gz2.TASK_SLICES[task.id]]
        asked = ~np.isnan(block).all(axis=1)
        np.testing.assert_allclose(block[asked].sum(axis=1), 1.0, atol=1e-3)
    cls = dict(zip(synthetic_truth["objid"], synthetic_truth["class"], strict=True))
    p_features = gz2.conditional_to_unconditional(fractions)[:, gz2.ANSWER_INDEX["a02"]]
    spirals = np.array([cls[o] == "spiral" for o in objid])
    ellipticals = np.array([cls[o] == "elliptical" for o in objid])
    assert p_features[spirals].mean() > p_features[ellipticals].mean() + 0.3


def test_scaling_values_are_like_the_papers(synthetic_bundle, synthetic_truth):
    """After star removal with the catalogue prior, as the pipeline does it (paper median: 78)."""
    stars = Table.read(synthetic_bundle / "stars.csv", format="ascii.csv")
    radec = np.column_stack([stars["ra"], stars["dec"]])
    values, fallbacks = [], 0
    for objid, fault in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True):
        if fault:
            continue
        with fits.open(synthetic_bundle / "images" / f"{objid}_g.fits") as hdul:
            header, image = hdul[0].header, hdul[0].data.astype(float)
        prior = prior_pixels(header, radec)
        fwhm_px = header["PSF_FWHM"] / header["PIXSCALE"]
        result = preprocess_cutout(image, fwhm_px, ImageMeta(0.05, 220.0, 0.4), prior_xy=prior)
        if result.scaling_fallback:  # too shallow for the target noise level: the closest value, flagged
            fallbacks += 1
        else:
            values.append(result.scaling_value)
    assert fallbacks <= 0.03 * len(values)
    assert 78 / 2 <= np.median(values) <= 78 * 2


def test_faults_are_injected_once_each(synthetic_truth):
    faults = [f for f in synthetic_truth["fault"] if f]
    assert sorted(faults) == sorted(FAULT_KINDS)


def test_same_seed_gives_the_same_survey(tmp_path):
    a = simulate_survey(tmp_path / "a", n=4, seed=9)
    b = simulate_survey(tmp_path / "b", n=4, seed=9, workers=2)
    simulate_survey(tmp_path / "c", n=4, seed=10)
    for name in ("catalogue.csv", "gswlc.dat", "gz2.csv", "truth.csv"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    first = sorted((tmp_path / "a" / "images").glob("*.fits"))[0].name
    images_a, images_b = tmp_path / "a" / "images", tmp_path / "b" / "images"
    np.testing.assert_array_equal(fits.getdata(images_a / first), fits.getdata(images_b / first))
    assert not filecmp.cmp(tmp_path / "a" / "catalogue.csv", tmp_path / "c" / "catalogue.csv", shallow=False)
    assert a.stats["median_z"] == b.stats["median_z"]


def test_montage_is_a_png_of_cutouts(synthetic_bundle, tmp_path):
    from PIL import Image

    out = write_montage(synthetic_bundle, tmp_path / "montage.png", columns=4, rows=2)
    with Image.open(out) as img:
        assert img.size == (4 * 128, 2 * (128 + 14))
        assert np.asarray(img).std() > 10  # not blank


def test_clumps_drawn_in_real_space_match_galsims_fourier_draw_of_the_knots(population):
    """The clumps are GalSim RandomKnots convolved with a Gaussian; drawing them as a sum of
    Gaussians must give what GalSim's own (much slower) draw gives."""
    import galsim

    from pipeline.simulate.images import GSPARAMS, _clump_light

    p = next(population.row(i) for i in range(len(population)) if population.row(i)["clump_frac"] > 0.2)
    nf, fine_scale = 2 * int(p["size_px"]), 0.198
    coords = (np.arange(nf) - (nf - 1) / 2) * fine_scale
    knots = galsim.RandomKnots(
        npoints=int(60 + 200 * p["clump_frac"]),
        half_light_radius=1.2 * p["r_disk_arcsec"],
        flux=3.0,
        rng=galsim.BaseDeviate(int(p["image_seed"]) + 17),
        gsparams=GSPARAMS,
    ).shear(q=max(p["q_disk"], 0.2), beta=p["pa_deg"] * galsim.degrees)
    sigma = max(0.5, 0.3 / (p["kpc_per_pixel"] / 0.396))
    expected = galsim.Convolve(knots, galsim.Gaussian(sigma=sigma), gsparams=GSPARAMS)
    expected = expected.drawImage(nx=nf, ny=nf, scale=fine_scale, method="no_pixel").array

    drawn = _clump_light(p, coords, 3.0)

    assert np.abs(drawn - expected).max() < 1e-5 * expected.max()
    assert drawn.sum() == pytest.approx(expected.sum(), rel=1e-4)


def test_another_instrument_sees_the_same_galaxies_with_its_seeing_pixels_and_sky(tmp_path):
    """--psf-fwhm, --pixel-scale and --sky-noise: the same seed draws the same galaxies; the headers
    say the instrument's pixel scale and PSF, the cutouts keep their field of view, and the sky is
    as noisy as asked (per area, so a finer pixel's noise is smaller by the ratio of the sides)."""
    from pipeline.simulate.images import SKY_SIGMA_NMGY
    from pipeline.simulate.instrument import Instrument

    sdss = simulate_survey(tmp_path / "sdss", n=3, seed=4)
    legacy = simulate_survey(tmp_path / "legacy", n=3, seed=4, instrument=Instrument(0.262, 2.24, 3.0))
    assert sdss.instrument == {"pixel_scale_arcsec": 0.396, "psf_fwhm_arcsec": 1.4, "sky_noise": 1.0}
    assert legacy.instrument["pixel_scale_arcsec"] == 0.262
    for name in ("catalogue.csv", "gswlc.dat"):
        assert filecmp.cmp(tmp_path / "sdss" / name, tmp_path / "legacy" / name, shallow=False), name
    truth_sdss = Table.read(tmp_path / "sdss" / "truth.csv", format="ascii.csv")
    truth_legacy = Table.read(tmp_path / "legacy" / "truth.csv", format="ascii.csv")
    np.testing.assert_allclose(truth_legacy["psf_fwhm_g"], 1.6 * truth_sdss["psf_fwhm_g"], rtol=1e-9)
    np.testing.assert_allclose(truth_legacy["kpc_per_pixel"], truth_sdss["kpc_per_pixel"] * 0.262 / 0.396, rtol=1e-9)
    for objid in truth_sdss["objid"]:
        with (
            fits.open(tmp_path / "sdss" / "images" / f"{objid}_g.fits") as a,
            fits.open(tmp_path / "legacy" / "images" / f"{objid}_g.fits") as b,
        ):
            assert b[0].header["PIXSCALE"] == 0.262 and a[0].header["PIXSCALE"] == 0.396
            assert b[0].header["PSF_FWHM"] == pytest.approx(1.6 * a[0].header["PSF_FWHM"], abs=1e-3)
            fov_a, fov_b = a[0].data.shape[0] * 0.396, b[0].data.shape[0] * 0.262
            assert abs(fov_a - fov_b) < 2 * 0.396  # the same field, at most a pixel's rounding apart
            assert WCS(b[0].header).proj_plane_pixel_scales()[0].to_value("arcsec") == pytest.approx(0.262)
            corner = b[0].data[:12, :12]  # sky (stars aside): the instrument's noise per pixel
            expected = SKY_SIGMA_NMGY["g"] * 3.0 * 0.262 / 0.396
            assert 0.6 * expected < np.median(np.abs(corner - np.median(corner))) / 0.6745 < 1.5 * expected


def test_simulate_survey_refuses_an_impossible_instrument(tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="pixel scale 0 arcsec is outside"):
        call_command("simulate_survey", str(tmp_path / "x"), "--n", "2", "--pixel-scale", "0")
    with pytest.raises(CommandError, match="sky noise -1 x SDSS is outside"):
        call_command("simulate_survey", str(tmp_path / "x"), "--n", "2", "--sky-noise", "-1")
    assert not (tmp_path / "x").exists()
