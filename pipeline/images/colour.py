"""The i band beside the g band: its log image and the g - i colour map, for networks that see colour.

The paper gives its networks the g image alone and adds colour as two global fluxes; a
galaxy whose M/L changes across it (a red bulge in blue arms, a dusty lane) shows that
in a resolved colour. An i cutout on the g cutout's pixel grid goes through the g chain:

* star removal with the stars found in g (the same positions, each disc sized on the i
  image itself, the fill's noise drawn with the g band's seed), so both bands lose the
  same pixels and a filled pixel takes the colour of its surroundings;
* the log scaling of Eq. 1 with its own automatic scaling value, and the same resizes;
* a g - i colour map (AB mag) from the two star-removed flux images, each resized by pixel
  area to the network's size first (a pixel's colour is the colour of its summed light),
  defined where both bands hold signal and NaN elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.stats import sigma_clipped_stats

from pipeline.images.preprocess import StarRemoval, central_square, log_scaled_image, resize_keep_fov
from pipeline.images.stars import PointSource, fitted_width_ratio, remove_point_sources

#: A pixel's colour is kept where both bands exceed this many times their resized sky noise.
MIN_COLOUR_SNR = 3.0


@dataclass
class ColourChannels:
    """The i band's scaling value and resized log images, and the colour maps: only what is
    stored, so a chunk's results in memory grow with the network sizes, not the cutouts'."""

    scaling_value: float
    noise_level: float
    log_resized: dict[int, np.ndarray] = field(default_factory=dict)
    colour: dict[int, np.ndarray] = field(default_factory=dict)  # g - i, AB mag; NaN without signal


def colour_map(g_nmgy: np.ndarray, i_nmgy: np.ndarray, size: int, min_snr: float = MIN_COLOUR_SNR) -> np.ndarray:
    """g - i (AB mag) per pixel at ``size`` x ``size``, NaN where either band lacks signal.

    Both flux images are resized over the same field of view first; a band has signal
    where it exceeds ``min_snr`` times its sigma-clipped noise at that size. Nanomaggies
    are AB, so g - i = -2.5 log10(f_g / f_i) needs no zero points.
    """
    if g_nmgy.shape != i_nmgy.shape:
        raise ValueError(f"the g and i images differ in shape: {g_nmgy.shape} and {i_nmgy.shape}")
    g, i = (resize_keep_fov(np.nan_to_num(band, nan=0.0), size).astype(np.float64) for band in (g_nmgy, i_nmgy))
    signal = np.ones(g.shape, bool)
    for band in (g, i):
        _, median, std = sigma_clipped_stats(band, sigma=3.0, maxiters=10)
        signal &= band - median > min_snr * max(float(std), np.finfo(np.float32).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        colour = -2.5 * np.log10(g / i)
    return np.where(signal & np.isfinite(colour), colour, np.nan).astype(np.float32)


def stars_in_band(stars: list[PointSource], image: np.ndarray, psf_fwhm_px: float) -> list[PointSource]:
    """The g band's stars at their positions, with width and peak fitted on ``image`` (another band):
    a disc is sized by the star's contrast in the band it is cut from."""
    out = []
    for star in stars:
        ratio, amplitude = fitted_width_ratio(image, star.x, star.y, psf_fwhm_px)
        out.append(PointSource(star.x, star.y, ratio * psf_fwhm_px, amplitude, star.from_prior))
    return out


def colour_channels(
    g_removal: StarRemoval, i_image_nmgy: np.ndarray, psf_fwhm_i_px: float, resolutions: tuple[int, ...], seed: int = 0
) -> ColourChannels:
    """The i cutout through the g chain (see the module docstring), beside ``g_removal``'s square.

    Raises
    ------
    ValueError, NoScalingValue
        for an i cutout not on the g cutout's grid, blank or noise-dominated, with the reason.
    """
    square, _ = central_square(np.asarray(i_image_nmgy, dtype=np.float64))
    if square.shape != g_removal.square.shape:
        raise ValueError(f"the i cutout's square is {square.shape[0]} px, the g cutout's {g_removal.square.shape[0]} px")
    finite = np.isfinite(square)
    if not finite.any():
        raise ValueError("the i image has 0 finite pixels")
    square = np.where(finite, square, 0.0)
    cleaned, _ = remove_point_sources(square, stars_in_band(g_removal.stars, square, psf_fwhm_i_px), psf_fwhm_i_px, seed)
    scaled = log_scaled_image(cleaned)
    return ColourChannels(
        scaling_value=scaled.scaling_value,
        noise_level=scaled.noise_level,
        log_resized={size: resize_keep_fov(scaled.image, size) for size in resolutions},
        colour={size: colour_map(g_removal.cleaned, cleaned, size) for size in resolutions},
    )
