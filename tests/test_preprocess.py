"""Preprocessing science (paper Sect. 2.2, 3.2): scaling value, star removal, features, resizing."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from pipeline.images import preprocess as pp
from pipeline.images.photometry import luminosity_distance_mpc
from pipeline.images.stars import find_point_sources, remove_point_sources, subtract_stars

PIXSCALE = 0.396
PSF_FWHM_ARCSEC = 1.4


def galaxy_image(flux: float, size: int = 128, hlr: float = 4.0, bulge: float = 0.0) -> np.ndarray:
    """A noise-free disk (+ optional de Vaucouleurs bulge) convolved with an SDSS-like PSF, nanomaggies."""
    profile = galsim.Exponential(half_light_radius=hlr, flux=flux * (1 - bulge))
    if bulge:
        profile += galsim.DeVaucouleurs(half_light_radius=1.0, flux=flux * bulge)
    psf = galsim.Moffat(beta=3.5, fwhm=PSF_FWHM_ARCSEC)
    return galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=PIXSCALE).array.astype(np.float64)


def star_image(flux: float, x: float, y: float, size: int = 128) -> np.ndarray:
    psf = galsim.Moffat(beta=3.5, fwhm=PSF_FWHM_ARCSEC, flux=flux)
    offset = galsim.PositionD(x - (size - 1) / 2, y - (size - 1) / 2)
    return psf.drawImage(nx=size, ny=size, scale=PIXSCALE, offset=offset).array.astype(np.float64)


@pytest.mark.parametrize(("flux", "sigma"), [(100, 0.01), (300, 0.01), (1000, 0.01), (1500, 0.008)])
def test_log_scaled_noise_level_is_02(flux, sigma):
    """Across the paper's range of scaling values (here a ~ 2-300; the paper's median is 78)."""
    clean = galaxy_image(flux, size=160, hlr=3.0)
    image = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)
    unit = pp.rescale_to_unit(image)
    a = pp.auto_scaling_value(pp.noise_level(unit))
    assert 0.5 < a < 400
    assert pp.noise_level(pp.log_scale(unit, a)) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("sigma", [0.003, 0.01, 0.03])
def test_noise_level_recovers_known_noise(sigma):
    """On a compact source the clipped background is pure sky: n = (0 - min + 2 sigma) / span."""
    clean = galaxy_image(300, size=160, hlr=0.8)
    image = clean + np.random.default_rng(2).normal(0, sigma, clean.shape)
    span = image.max() - image.min()
    true_noise = (0.0 - image.min() + 2 * sigma) / span
    estimated = pp.noise_level(pp.rescale_to_unit(image))
    assert estimated == pytest.approx(true_noise, rel=0.03)
    a = pp.auto_scaling_value(estimated)
    assert pp.log_scaled_noise(true_noise, a) == pytest.approx(0.2, abs=0.01)


def test_brighter_galaxies_get_larger_scaling_values():
    rng = np.random.default_rng(2)
    values = []
    for flux in (150, 400, 1200, 3500, 10000):
        image = galaxy_image(flux) + rng.normal(0, 0.01, (128, 128))
        values.append(pp.auto_scaling_value(pp.noise_level(pp.rescale_to_unit(image))))
    assert values == sorted(values)
    assert values[-1] > 10 * values[0]


def test_scaling_value_solves_equation_1_and_fails_clearly():
    a = pp.auto_scaling_value(0.02)
    assert np.log1p(a * 0.02) / np.log1p(a) == pytest.approx(0.2, abs=1e-9)
    with pytest.raises(pp.NoScalingValue, match="0.25"):
        pp.auto_scaling_value(0.25)
    with pytest.raises(pp.NoScalingValue):
        pp.auto_scaling_value(0.0)
    with pytest.raises(pp.NoScalingValue, match="leaves no scaling value"):
        pp.closest_scaling_value(0.0)


def test_an_image_too_shallow_for_the_target_noise_level_gets_the_closest_scaling_flagged():
    """Pure noise leaves no scaling value at the target: the smallest bound comes closest (Eq. 1 all but
    linear), and the result says so; an ordinary galaxy is not flagged."""
    noise_only = np.random.default_rng(3).normal(0, 1, (64, 64))
    result = pp.preprocess(noise_only, pp.ImageMeta(0.05, 220, 0.4), (32,))
    assert result.scaling_fallback and result.scaling_value == pp.SCALING_BOUNDS[0]
    assert result.noise_level >= pp.TARGET_NOISE_LEVEL
    # the closest achievable: log-scaled noise at the smallest a is nearer the target than at any larger a
    reached = pp.log_scaled_noise(result.noise_level, result.scaling_value)
    assert all(reached <= pp.log_scaled_noise(result.noise_level, a) for a in (1e-3, 1.0, 80.0))
    unit = pp.rescale_to_unit(noise_only)
    np.testing.assert_allclose(result.log_image, unit, atol=1e-5)  # the image as it is, not a log stretch
    assert np.isfinite(result.features["log_mean"]) and result.resized[32].shape == (32, 32)
    galaxy = galaxy_image(200.0) + np.random.default_rng(4).normal(0, 0.01, (128, 128))
    ordinary = pp.preprocess(galaxy, pp.ImageMeta(0.05, 220, 0.4))
    assert not ordinary.scaling_fallback and ordinary.scaling_value > 1


def test_log_scale_maps_unit_interval_onto_itself():
    unit = np.linspace(0, 1, 11)
    out = pp.log_scale(unit, 78.0)
    assert out[0] == 0 and out[-1] == pytest.approx(1)
    assert np.all(np.diff(out) > 0)
    assert out[1] > 0.4  # faint levels are boosted


def test_noise_estimate_does_not_modify_the_image():
    image = np.random.default_rng(4).normal(0, 1, (64, 64))
    image[30:34, 30:34] = 100
    before = image.copy()
    pp.noise_level(pp.rescale_to_unit(image))
    np.testing.assert_array_equal(image, before)


def test_blank_and_empty_images_are_rejected_with_reasons():
    with pytest.raises(ValueError, match="constant"):
        pp.rescale_to_unit(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="0 finite"):
        pp.preprocess(np.full((32, 32), np.nan), pp.ImageMeta(0.05, 220, 0.4))


def test_injected_star_is_removed_and_the_bulge_survives():
    rng = np.random.default_rng(5)
    galaxy = galaxy_image(800, bulge=0.4)
    noise = rng.normal(0, 0.01, galaxy.shape)
    star_at = (98.0, 41.0)
    image = galaxy + noise + star_image(120, *star_at)
    fwhm_px = PSF_FWHM_ARCSEC / PIXSCALE
    cleaned, found = subtract_stars(image, fwhm_px)
    assert len(found) == 1
    assert np.hypot(found[0].x - star_at[0], found[0].y - star_at[1]) < 1.0
    # The star is gone: residual around it is at the noise level.
    y, x = np.indices(image.shape)
    around = np.hypot(x - star_at[0], y - star_at[1]) < 6
    assert np.abs(cleaned[around] - galaxy[around]).mean() < 5 * 0.01
    # The galaxy's centre is untouched to 1%.
    c = image.shape[0] // 2
    centre = slice(c - 2, c + 3)
    assert cleaned[centre, centre].sum() == pytest.approx((galaxy + noise)[centre, centre].sum(), rel=0.01)


def test_resolved_clumps_are_not_taken_for_stars():
    rng = np.random.default_rng(6)
    galaxy = galaxy_image(800, hlr=6.0)
    clump = galsim.Convolve(galsim.Gaussian(sigma=0.8, flux=15), galsim.Moffat(beta=3.5, fwhm=PSF_FWHM_ARCSEC))
    clump_image = clump.drawImage(nx=128, ny=128, scale=PIXSCALE, offset=galsim.PositionD(20, -15)).array
    image = galaxy + clump_image + rng.normal(0, 0.01, galaxy.shape)
    assert find_point_sources(image, PSF_FWHM_ARCSEC / PIXSCALE) == []


def test_catalogue_prior_limits_removal_to_listed_stars():
    rng = np.random.default_rng(7)
    image = galaxy_image(800) + star_image(80, 100, 30) + star_image(80, 25, 100) + rng.normal(0, 0.01, (128, 128))
    fwhm_px = PSF_FWHM_ARCSEC / PIXSCALE
    found = find_point_sources(image, fwhm_px, prior_xy=np.array([[100.4, 29.6]]))
    assert len(found) == 1 and found[0].from_prior
    assert find_point_sources(image, fwhm_px, prior_xy=np.empty((0, 2))) == []
    cleaned, filled = remove_point_sources(image, [], fwhm_px)
    np.testing.assert_array_equal(cleaned, image)
    assert not filled.any()
    cleaned[0, 0] += 1.0  # a copy: the caller's image is never modified
    assert cleaned[0, 0] != image[0, 0]


def test_luminosity_features_scale_with_distance_squared():
    image = galaxy_image(500)
    near, far = luminosity_distance_mpc([0.03, 0.06])
    f_near = pp.luminosity_features(image, near)
    f_far = pp.luminosity_features(image, far)
    for name in ("lum_sum", "lum_mean", "lum_max", "lum_std", "lum_center", "lum_center5"):
        assert f_far[name] / f_near[name] == pytest.approx((far / near) ** 2, rel=1e-9)
    assert f_near["image_size"] == 128


def test_luminosity_sum_is_the_galaxy_luminosity():
    # A galaxy of g = 5.11 (22.5 - 2.5 log10 of 8.88e6 nanomaggies) seen from 10 pc is 1 Lsun,g.
    image = galaxy_image(400.0, size=200)
    image *= 10 ** (-0.4 * (5.11 - 22.5)) / image.sum()
    assert pp.luminosity_features(image, 1e-5)["lum_sum"] == pytest.approx(1.0, rel=1e-9)
    # At 100 pc the same flux is 100 times the luminosity.
    assert pp.luminosity_features(image, 1e-4)["lum_sum"] == pytest.approx(100.0, rel=1e-9)


def test_shrinking_keeps_total_flux_and_enlarging_keeps_the_field():
    image = galaxy_image(500, size=150) + np.random.default_rng(8).normal(0, 0.01, (150, 150))
    for size in (69, 128):
        small = pp.resize_keep_fov(image, size)
        assert small.shape == (size, size)
        # Surface brightness is averaged, so flux = sum x pixel area.
        assert small.sum() * (150 / size) ** 2 == pytest.approx(image.sum(), rel=1e-4)
    big = pp.resize_keep_fov(image, 197)
    assert big.shape == (197, 197)
    assert big.mean() == pytest.approx(image.mean(), rel=0.02)
    # The peak stays at the centre: the field of view is kept, not shifted.
    assert np.unravel_index(np.argmax(big), big.shape) == pytest.approx((98, 98), abs=1)


def test_preprocess_returns_every_named_feature_with_units():
    image = galaxy_image(500) + np.random.default_rng(9).normal(0, 0.01, (128, 128))
    result = pp.preprocess(image, pp.ImageMeta(0.05, 222.0, 0.41), resolutions=(32, 69))
    assert set(result.features) == set(pp.FEATURE_NAMES) == set(pp.FEATURE_UNITS)
    assert result.features["redshift"] == 0.05 and result.features["pixel_kpc"] == 0.41
    assert result.features["scaling_value"] == result.scaling_value > 0
    assert result.resized[32].shape == (32, 32) and result.resized[69].shape == (69, 69)
    assert 0 <= result.log_image.min() and result.log_image.max() <= 1 + 1e-6


def test_catalogue_stars_are_matched_to_the_cutouts_they_fall_in():
    from pipeline.images.stars import stars_in_fields

    ra, dec, d25 = np.array([10.0, 10.0, 200.0, np.nan]), np.array([0.0, 0.5, -30.0, 0.0]), np.array([1.0, 2.0, 1.0, 1.0])
    # half diagonal of a 1.125 x D25 square: 0.795 arcmin for D25 = 1 arcmin, 1.59 for 2
    star_ra = np.array([10.0 + 0.7 / 60, 10.0 + 0.9 / 60, 10.0, 200.0])
    star_dec = np.array([0.0, 0.0, 0.5 + 1.5 / 60, -30.0])
    galaxy_index, star_index = stars_in_fields(ra, dec, d25, star_ra, star_dec)
    assert sorted(zip(galaxy_index.tolist(), star_index.tolist(), strict=True)) == [(0, 0), (1, 2), (2, 3)]
    assert [len(a) for a in stars_in_fields(ra, dec, d25, star_ra[:0], star_dec[:0])] == [0, 0]
