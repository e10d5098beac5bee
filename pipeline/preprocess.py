"""Image preprocessing of Dobbels et al. 2019 (Sect. 2.2 and 3.2), as small pure functions.

A g-band cutout goes through: star removal (``pipeline.stars``), luminosity features in
physical units, a linear rescale to [0, 1], the automatic scaling value that puts the
log-scaled noise level at 0.2, the log scaling of Eq. 1, log-image statistics, and a
resize per network that keeps the field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import SigmaClip
from scipy.ndimage import zoom
from scipy.optimize import brentq

from pipeline.photometry import nanomaggies_to_lsun, pixel_size_kpc

TARGET_NOISE_LEVEL = 0.2
#: Pixels used for the noise estimate; larger images are subsampled on a regular grid.
NOISE_SAMPLE_PIXELS = 16384
SCALING_BOUNDS = (1e-6, 1e12)

#: Feature name -> unit. Luminosities are per pixel of the star-subtracted image.
FEATURE_UNITS: dict[str, str] = {
    "lum_sum": "Lsun,g",
    "lum_mean": "Lsun,g / pixel",
    "lum_max": "Lsun,g / pixel",
    "lum_min": "Lsun,g / pixel",
    "lum_std": "Lsun,g / pixel",
    "lum_center": "Lsun,g / pixel",
    "lum_center5": "Lsun,g / pixel",
    "image_size": "pixel",
    "scaling_value": "",
    "log_sum": "",
    "log_mean": "",
    "log_std": "",
    "log_center": "",
    "log_center5": "",
    "redshift": "",
    "pixel_kpc": "kpc",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_UNITS)


class NoScalingValue(ValueError):
    """No positive scaling value reaches the target noise level (noise-dominated image)."""


def rescale_to_unit(image: np.ndarray) -> np.ndarray:
    """Linear rescale of the finite pixels to [0, 1] (min -> 0, max -> 1); NaN -> 0.

    Raises
    ------
    ValueError
        if the image has no finite pixels or is constant.
    """
    finite = np.isfinite(image)
    if not finite.any():
        raise ValueError("image has 0 finite pixels")
    lo, hi = float(np.min(image, where=finite, initial=np.inf)), float(np.max(image, where=finite, initial=-np.inf))
    if not hi > lo:
        raise ValueError(f"image is constant (all finite pixels equal {lo:g})")
    unit = (image - lo) / (hi - lo)
    if not finite.all():
        unit = np.where(finite, unit, 0.0)
    return unit


def noise_level(unit_image: np.ndarray, sigma: float = 3.0, maxiters: int = 5) -> float:
    """Noise level of a [0, 1] image: mean + 2 std of its sigma-clipped pixels (paper Sect. 2.2).

    Images larger than :data:`NOISE_SAMPLE_PIXELS` are sampled on a regular grid; the
    noise statistics of a few thousand pixels are already precise to about 1%.
    """
    stride = max(1, math.ceil(math.sqrt(unit_image.size / NOISE_SAMPLE_PIXELS)))
    sample = np.array(unit_image[::stride, ::stride], dtype=np.float64, copy=True).reshape(1, -1)
    _, lo, hi = SigmaClip(sigma=sigma, maxiters=maxiters)(sample, axis=1, masked=False, return_bounds=True, copy=False)
    kept = sample[(sample >= lo[0]) & (sample <= hi[0])]
    if kept.size < 10:
        raise ValueError(f"noise cannot be estimated: {kept.size} pixels survive sigma clipping")
    return float(kept.mean() + 2.0 * kept.std())


def log_scaled_noise(noise: float, a: float) -> float:
    """Where the noise level lands after Eq. 1: log(1 + a n) / log(1 + a)."""
    return math.log1p(a * noise) / math.log1p(a)


def auto_scaling_value(noise: float, target: float = TARGET_NOISE_LEVEL) -> float:
    """Scaling value a with log(1 + a n) / log(1 + a) = target (paper Sect. 2.2).

    The left side rises from n (a -> 0) to 1 (a -> inf), so a root exists exactly when
    0 < n < target; higher S/N (smaller n) gives a larger a.

    Raises
    ------
    NoScalingValue
        when n >= target (noise-dominated) or n <= 0, naming the value.
    """
    if not 0 < noise < target:
        raise NoScalingValue(f"noise level {noise:.4g} of the [0, 1] image leaves no scaling value for target {target}")
    lo, hi = (math.log(b) for b in SCALING_BOUNDS)

    def gap(log_a: float) -> float:
        return log_scaled_noise(noise, math.exp(log_a)) - target

    if gap(hi) < 0:
        raise NoScalingValue(f"noise level {noise:.4g} needs a scaling value above {SCALING_BOUNDS[1]:g}")
    if gap(lo) > 0:  # only for noise within 1e-6 of the target
        return SCALING_BOUNDS[0]
    return math.exp(brentq(gap, lo, hi, xtol=1e-10))


def log_scale(unit_image: np.ndarray, a: float) -> np.ndarray:
    """Eq. 1: F' = log(1 + a F) / log(1 + a), mapping [0, 1] onto [0, 1]."""
    return np.log1p(a * unit_image) / math.log1p(a)


def central_values(image: np.ndarray) -> tuple[float, float]:
    """The central pixel and the mean of the central 5 x 5 pixels."""
    cy, cx = image.shape[0] // 2, image.shape[1] // 2
    return float(image[cy, cx]), float(image[cy - 2 : cy + 3, cx - 2 : cx + 3].mean())


def luminosity_features(image_nmgy: np.ndarray, lum_dist_mpc: float) -> dict[str, float]:
    """Statistics of the star-subtracted image in Lsun,g per pixel (flux x 4 pi D_L^2)."""
    lum = nanomaggies_to_lsun(np.nan_to_num(image_nmgy, nan=0.0), lum_dist_mpc, "g")
    center, center5 = central_values(lum)
    return {
        "lum_sum": float(lum.sum()),
        "lum_mean": float(lum.mean()),
        "lum_max": float(lum.max()),
        "lum_min": float(lum.min()),
        "lum_std": float(lum.std()),
        "lum_center": center,
        "lum_center5": center5,
        "image_size": float(image_nmgy.shape[0]),
    }


def log_image_features(log_image: np.ndarray) -> dict[str, float]:
    """Statistics of the log-scaled image."""
    center, center5 = central_values(log_image)
    return {
        "log_sum": float(log_image.sum()),
        "log_mean": float(log_image.mean()),
        "log_std": float(log_image.std()),
        "log_center": center,
        "log_center5": center5,
    }


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) overlap fractions of output pixels with input pixels, rows summing to 1."""
    edges_out = np.linspace(0, n_in, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap = np.clip(hi - lo, 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_keep_fov(image: np.ndarray, size: int) -> np.ndarray:
    """Resample to ``size`` x ``size`` pixels over the same field of view.

    Shrinking averages by pixel area (each output pixel is the area-weighted mean of the
    input pixels it covers, so total flux x pixel area is conserved); enlarging uses
    bicubic (cubic spline) interpolation.
    """
    ny, nx = image.shape
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if size <= min(ny, nx):
        return _area_weights(ny, size) @ image @ _area_weights(nx, size).T
    return zoom(image, (size / ny, size / nx), order=3, mode="nearest", grid_mode=True)


@dataclass
class ImageMeta:
    """What preprocessing needs besides the pixels."""

    redshift: float
    lum_dist_mpc: float
    pixscale_arcsec: float


@dataclass
class PreprocessedImage:
    scaling_value: float
    noise_level: float
    features: dict[str, float]
    log_image: np.ndarray
    resized: dict[int, np.ndarray] = field(default_factory=dict)
    n_stars_removed: int = 0


def preprocess(
    image_nmgy: np.ndarray, meta: ImageMeta, resolutions: tuple[int, ...] = (), n_stars_removed: int = 0
) -> PreprocessedImage:
    """Features, scaling value, log image and resized copies of a star-subtracted image.

    Raises
    ------
    ValueError, NoScalingValue
        for blank or noise-dominated images, with the reason.
    """
    features = luminosity_features(image_nmgy, meta.lum_dist_mpc)
    unit = rescale_to_unit(image_nmgy)
    noise = noise_level(unit)
    a = auto_scaling_value(noise)
    log_image = log_scale(unit, a)
    features["scaling_value"] = a
    features.update(log_image_features(log_image))
    features["redshift"] = float(meta.redshift)
    features["pixel_kpc"] = float(pixel_size_kpc(meta.pixscale_arcsec, meta.redshift))
    resized = {size: resize_keep_fov(log_image, size) for size in resolutions}
    return PreprocessedImage(a, noise, features, log_image, resized, n_stars_removed)
