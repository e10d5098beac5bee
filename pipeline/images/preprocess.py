"""Image preprocessing of Dobbels et al. 2019 (Sect. 2.2 and 3.2), as small pure functions.

A g-band cutout goes through: star removal (``pipeline.images.stars``), luminosity features in
physical units, a linear rescale to [0, 1], the automatic scaling value that puts the
log-scaled noise level at 0.2, the log scaling of Eq. 1, log-image statistics, and a
resize per network that keeps the field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from astropy.stats import SigmaClip
from scipy.optimize import brentq

from pipeline import units
from pipeline.images.photometry import nanomaggies_to_lsun

TARGET_NOISE_LEVEL = 0.2
#: Pixels used for the noise estimate; larger images are subsampled on a regular grid.
NOISE_SAMPLE_PIXELS = 8192
SCALING_BOUNDS = (1e-6, 1e12)
#: Below this scaling value Eq. 1 is computed in float64 (float32's 1 + a F loses the image).
SMALL_SCALING_VALUE = 1e-2

#: Feature name -> unit. Luminosities are per pixel of the star-subtracted image.
FEATURE_UNITS: dict[str, str] = {
    "lum_sum": units.LUMINOSITY,
    "lum_mean": units.LUMINOSITY_PER_PIXEL,
    "lum_max": units.LUMINOSITY_PER_PIXEL,
    "lum_min": units.LUMINOSITY_PER_PIXEL,
    "lum_std": units.LUMINOSITY_PER_PIXEL,
    "lum_center": units.LUMINOSITY_PER_PIXEL,
    "lum_center5": units.LUMINOSITY_PER_PIXEL,
    "image_size": "pix",
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
    all_finite = bool(finite.all())
    if all_finite:
        lo, hi = float(image.min()), float(image.max())
    elif not finite.any():
        raise ValueError("image has 0 finite pixels")
    else:
        lo, hi = float(np.min(image, where=finite, initial=np.inf)), float(np.max(image, where=finite, initial=-np.inf))
    if not hi > lo:
        raise ValueError(f"image is constant (all finite pixels equal {lo:g})")
    unit = (image - lo) * (1.0 / (hi - lo))
    if not all_finite:
        unit = np.where(finite, unit, 0.0)
    return unit


#: Sigma clipping of the noise estimate runs until no pixel is clipped; this only bounds it.
#: A cutout the galaxy fills needs tens of iterations: stopping at 5 left galaxy light in
#: the "noise" and gave scaling values about 0.77 of the converged ones.
NOISE_CLIP_MAX_ITERS = 100


def noise_sample(unit_image: np.ndarray, sigma: float = 3.0, maxiters: int = NOISE_CLIP_MAX_ITERS) -> np.ndarray:
    """The sigma-clipped pixels of a [0, 1] image: the background the noise level describes.

    Clipping is iterated to convergence (at most ``maxiters`` rounds). Images larger than
    :data:`NOISE_SAMPLE_PIXELS` are sampled on a regular grid; the noise statistics of a
    few thousand pixels are already precise to about 2%.
    """
    stride = max(1, math.ceil(math.sqrt(unit_image.size / NOISE_SAMPLE_PIXELS)))
    sample = np.array(unit_image[::stride, ::stride], dtype=np.float64, copy=True).reshape(1, -1)
    _, lo, hi = SigmaClip(sigma=sigma, maxiters=maxiters)(sample, axis=1, masked=False, return_bounds=True, copy=False)
    kept = sample[(sample >= lo[0]) & (sample <= hi[0])]
    if kept.size < 10:
        raise ValueError(f"noise cannot be estimated: {kept.size} pixels survive sigma clipping")
    return kept


def level(pixels: np.ndarray) -> float:
    """Mean + 2 standard deviations: the paper's noise level of a set of pixels."""
    return float(pixels.mean() + 2.0 * pixels.std())


def noise_level(unit_image: np.ndarray) -> float:
    """Noise level of a [0, 1] image: mean + 2 std of its sigma-clipped pixels (paper Sect. 2.2)."""
    return level(noise_sample(unit_image))


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
    if gap(lo) > 0:  # only for noise within a hair of the target
        return SCALING_BOUNDS[0]
    return math.exp(brentq(gap, lo, hi, xtol=1e-10))


def closest_scaling_value(noise: float, target: float = TARGET_NOISE_LEVEL) -> float:
    """The scaling value that brings the noise level nearest ``target`` when none reaches it.

    log(1 + a n) / log(1 + a) rises with a from n towards 1, so for n >= target (an image too
    shallow for the paper's scaling) the smallest bound of a comes closest (Eq. 1 is then
    linear), and for a noise level too small for the largest bound, the largest.

    Raises
    ------
    NoScalingValue
        for n <= 0 (no noise to scale: a blank or constant background).
    """
    if not noise > 0:
        raise NoScalingValue(f"noise level {noise:.4g} of the [0, 1] image leaves no scaling value for target {target}")
    return SCALING_BOUNDS[0] if noise >= target else SCALING_BOUNDS[1]


def log_scaled_noise(noise: float, a: float) -> float:
    """Where a noise level n lands after Eq. 1: log(1 + a n) / log(1 + a)."""
    return math.log1p(a * noise) / math.log1p(a)


def log_scale(unit_image: np.ndarray, a: float) -> np.ndarray:
    """Eq. 1: F' = log(1 + a F) / log(1 + a), mapping [0, 1] onto [0, 1] (keeps the input dtype).

    Uses log(1 + x) rather than log1p: numpy vectorises log (SIMD) but not log1p, and the
    absolute difference (~1e-7) is far below the float16 precision the arrays are kept in.
    """
    if a < SMALL_SCALING_VALUE:  # 1 + a F would round to 1 in float32: Eq. 1 is all but linear, computed as such
        return (np.log1p(np.multiply(unit_image, a, dtype=np.float64)) / math.log1p(a)).astype(unit_image.dtype)
    out = np.multiply(unit_image, a, dtype=unit_image.dtype)
    out += 1
    np.log(out, out=out)
    out *= unit_image.dtype.type(1.0 / math.log1p(a))
    return out


def central_values(image: np.ndarray) -> tuple[float, float]:
    """The central pixel and the mean of the central 5 x 5 pixels."""
    cy, cx = image.shape[0] // 2, image.shape[1] // 2
    return float(image[cy, cx]), float(image[cy - 2 : cy + 3, cx - 2 : cx + 3].mean())


def luminosity_features(image_nmgy: np.ndarray, lum_dist_mpc: float) -> dict[str, float]:
    """Statistics of the star-subtracted image in Lsun,g per pixel (flux x 4 pi D_L^2).

    The conversion is one positive factor, so the statistics are taken on the flux image
    and scaled, rather than converting every pixel.
    """
    scale = float(nanomaggies_to_lsun(1.0, lum_dist_mpc, "g"))
    center, center5 = central_values(image_nmgy)
    return {
        "lum_sum": float(image_nmgy.sum(dtype=np.float64)) * scale,
        "lum_mean": float(image_nmgy.mean(dtype=np.float64)) * scale,
        "lum_max": float(image_nmgy.max()) * scale,
        "lum_min": float(image_nmgy.min()) * scale,
        "lum_std": float(image_nmgy.std(dtype=np.float64)) * scale,
        "lum_center": center * scale,
        "lum_center5": center5 * scale,
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


@lru_cache(maxsize=256)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) overlap fractions of output pixels with input pixels, rows summing to 1.

    Cached (read-only): a survey has few distinct image sizes and each network one size.
    """
    edges_out = np.linspace(0, n_in, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap = np.clip(hi - lo, 0, None)
    weights = (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False
    return weights


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys (1981) cubic convolution kernel: the 'bicubic' of image libraries."""
    t = np.abs(t)
    return np.where(
        t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0)
    )


@lru_cache(maxsize=256)
def _bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bicubic interpolation weights over the same field of view (edges clamped)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5  # output pixel centres in input pixels
    base = np.floor(centres).astype(int)
    weights = np.zeros((n_out, n_in))
    for k in range(-1, 3):
        idx = base + k
        w = _keys_cubic(centres - idx)
        np.add.at(weights, (np.arange(n_out), np.clip(idx, 0, n_in - 1)), w)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False
    return weights


def resize_keep_fov(image: np.ndarray, size: int) -> np.ndarray:
    """Resample to ``size`` x ``size`` pixels over the same field of view.

    Shrinking averages by pixel area (each output pixel is the area-weighted mean of the
    input pixels it covers, so total flux x pixel area is conserved); enlarging uses
    bicubic interpolation. Both are separable, cached matrices: out = Wy @ image @ Wx.T.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    ny, nx = image.shape
    weights = _area_weights if size <= min(ny, nx) else _bicubic_weights
    return weights(ny, size) @ np.asarray(image, dtype=np.float32) @ weights(nx, size).T


@dataclass
class ImageMeta:
    """What preprocessing needs besides the pixels."""

    redshift: float
    lum_dist_mpc: float  # Mpc
    pixel_kpc: float  # kpc, physical size of one pixel (photometry.pixel_size_kpc, vectorised upstream)


@dataclass
class PreprocessedImage:
    scaling_value: float
    noise_level: float
    features: dict[str, float]
    log_image: np.ndarray
    resized: dict[int, np.ndarray] = field(default_factory=dict)
    n_stars_removed: int = 0
    #: The scaling value is the closest achievable, not one at the target noise level.
    scaling_fallback: bool = False


def preprocess(
    image_nmgy: np.ndarray, meta: ImageMeta, resolutions: tuple[int, ...] = (), n_stars_removed: int = 0
) -> PreprocessedImage:
    """Features, scaling value, log image and resized copies of a star-subtracted image.

    Raises
    ------
    ValueError, NoScalingValue
        for blank or noise-dominated images, with the reason.
    """
    finite = np.isfinite(image_nmgy)
    if not finite.all():
        if not finite.any():
            raise ValueError("image has 0 finite pixels")
        image_nmgy = np.where(finite, image_nmgy, 0.0)
    features = luminosity_features(image_nmgy, meta.lum_dist_mpc)
    scaled = log_scaled_image(image_nmgy)
    features["scaling_value"] = scaled.scaling_value
    features.update(log_image_features(scaled.image))
    features["redshift"] = float(meta.redshift)
    features["pixel_kpc"] = float(meta.pixel_kpc)
    resized = {size: resize_keep_fov(scaled.image, size) for size in resolutions}
    return PreprocessedImage(
        scaled.scaling_value, scaled.noise_level, features, scaled.image, resized, n_stars_removed, scaled.fallback
    )


@dataclass
class LogScaledImage:
    scaling_value: float
    noise_level: float
    image: np.ndarray  # float32, [0, 1]
    #: No scaling value reached the target noise level: the closest one was used (:func:`closest_scaling_value`).
    fallback: bool = False


def log_scaled_image(image_nmgy: np.ndarray) -> LogScaledImage:
    """Eq. 1 on the image rescaled to [0, 1], with the scaling value that puts its noise at 0.2.

    An image too shallow for that (its noise level is already above 0.2) gets the scaling
    value that comes closest, and says so (``fallback``): such images are a few percent of an
    SDSS-like survey and a sixth of one with three times its sky noise, and a galaxy without
    a log image has no image features at all.

    Raises
    ------
    ValueError, NoScalingValue
        for a constant or blank image (no noise to scale).
    """
    unit = rescale_to_unit(image_nmgy)
    noise = noise_level(unit)
    try:
        a, fallback = auto_scaling_value(noise), False
    except NoScalingValue:
        a, fallback = closest_scaling_value(noise), True
    return LogScaledImage(a, noise, log_scale(unit.astype(np.float32), np.float32(a)), fallback)


@dataclass
class StarRemoval:
    """A cutout's central square before and after star removal, in nanomaggies per pixel.

    ``stars`` are the removed point sources, in the square's pixel coordinates.
    """

    square: np.ndarray
    cleaned: np.ndarray
    stars: list


def remove_stars(image_nmgy: np.ndarray, psf_fwhm_px: float, prior_xy: np.ndarray | None = None, seed: int = 0) -> StarRemoval:
    """Star removal as the preprocess stage does it: on the central square, catalogue stars shifted into it.

    ``prior_xy`` holds catalogue star positions in the cutout's pixels (an empty array when
    the survey has a star catalogue and none fall here); None detects stars blindly. The
    stage and the galaxy page's star-subtracted image both call this, so they agree pixel
    for pixel.
    """
    from pipeline.images.stars import subtract_stars

    square, (x0, y0) = central_square(image_nmgy)
    if prior_xy is not None and (x0 or y0):
        prior_xy = np.asarray(prior_xy, dtype=float).reshape(-1, 2) - [x0, y0]
    cleaned, stars = subtract_stars(square, psf_fwhm_px, prior_xy, seed)
    return StarRemoval(square=square, cleaned=cleaned, stars=list(stars))


def preprocess_cutout(
    image_nmgy: np.ndarray,
    psf_fwhm_px: float,
    meta: ImageMeta,
    resolutions: tuple[int, ...] = (),
    prior_xy: np.ndarray | None = None,
    seed: int = 0,
) -> PreprocessedImage:
    """:func:`remove_stars` then :func:`preprocess`: the whole per-galaxy chain of the paper."""
    removal = remove_stars(image_nmgy, psf_fwhm_px, prior_xy, seed)
    return preprocess(removal.cleaned, meta, resolutions, n_stars_removed=len(removal.stars))


def central_square(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The largest square centred on the image, and its (x, y) offset in the image.

    A non-square cutout is cropped, never stretched: the networks see square inputs and a
    stretched galaxy would have the wrong shape. A square image is returned as it is.
    """
    ny, nx = image.shape
    if ny == nx:
        return image, (0, 0)
    side = min(ny, nx)
    y0, x0 = (ny - side) // 2, (nx - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side], (x0, y0)
