"""The i band beside the g band: the same star removal and scaling, and the g - i colour map."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.images.colour import colour_channels, colour_map
from pipeline.images.preprocess import ImageMeta, preprocess, remove_stars
from tests.test_preprocess import PIXSCALE, PSF_FWHM_ARCSEC, galaxy_image, star_image

PSF_PX = PSF_FWHM_ARCSEC / PIXSCALE
SIZES = (48, 69)


def g_cutout(seed: int = 3) -> np.ndarray:
    """A disk and bulge with a star beside it and sky noise, nanomaggies."""
    image = galaxy_image(400, size=128, hlr=4.0, bulge=0.3) + star_image(60, 90.0, 40.0)
    return image + np.random.default_rng(seed).normal(0, 0.01, image.shape)


@pytest.mark.parametrize("colour", [0.4, 1.2])
def test_an_i_image_that_is_the_g_image_scaled_by_a_colour_gives_that_colour(colour):
    g = g_cutout()
    i = g * 10 ** (0.4 * colour)  # g - i = colour: i is brighter for a redder galaxy
    removal = remove_stars(g, PSF_PX, seed=5)
    assert removal.stars, "the star beside the galaxy is found in g"
    channels = colour_channels(removal, i, PSF_PX, SIZES, seed=5)
    for size in SIZES:
        colours = channels.colour[size]
        assert colours.shape == (size, size)
        measured = colours[np.isfinite(colours)]
        # The galaxy's light has a colour; the sky around it is masked.
        assert np.isfinite(colours[size // 2, size // 2]) and np.isnan(colours[0, 0])
        assert 0.03 < measured.size / colours.size < 0.8
        np.testing.assert_allclose(measured, colour, atol=1e-4)
    # Scaling the image changes neither its log image nor its scaling value (Eq. 1 on [0, 1]).
    g_pre = preprocess(removal.cleaned, ImageMeta(0.05, 220.0, 0.4), SIZES)
    assert channels.scaling_value == pytest.approx(g_pre.scaling_value, rel=1e-6)
    for size in SIZES:
        np.testing.assert_allclose(channels.log_resized[size], g_pre.resized[size], atol=1e-5)


def test_colour_follows_a_red_bulge_in_a_blue_disk():
    """A resolved colour: the centre redder than the outskirts."""
    rng = np.random.default_rng(4)
    bulge, disk = galaxy_image(200, hlr=1.0, bulge=1.0), galaxy_image(300, hlr=6.0)
    g = bulge + disk + rng.normal(0, 0.005, bulge.shape)
    i = bulge * 10 ** (0.4 * 1.3) + disk * 10 ** (0.4 * 0.5) + rng.normal(0, 0.005, bulge.shape)
    colours = colour_map(g, i, 64)
    centre, ring = colours[30:34, 30:34], colours[32, 44:48]
    assert np.nanmean(centre) > 1.0 and np.nanmean(ring) < np.nanmean(centre) - 0.2


def test_noise_only_pixels_and_mismatched_grids_are_refused():
    g = g_cutout()
    blank_i = np.random.default_rng(9).normal(0, 0.01, g.shape)
    assert np.isnan(colour_map(g, blank_i, 48)).mean() > 0.95  # i has no galaxy: (almost) no colour anywhere
    removal = remove_stars(g, PSF_PX)
    with pytest.raises(ValueError, match="the i cutout's square is 100 px, the g cutout's 128 px"):
        colour_channels(removal, g[:100, :100], PSF_PX, SIZES)
    with pytest.raises(ValueError, match="differ in shape"):
        colour_map(g, g[:100, :100], 48)
    with pytest.raises(ValueError, match="0 finite pixels"):
        colour_channels(removal, np.full(g.shape, np.nan), PSF_PX, SIZES)
