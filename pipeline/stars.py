"""Foreground-star removal (paper Sect. 2.2, as PTS does it).

Candidates come from photutils' ``DAOStarFinder`` (its kernel is zero-sum, so smooth
galaxy light does not trigger it). A candidate is a star only if it is as compact as the
PSF: :func:`fitted_width_ratio` fits a plane plus a Gaussian of width r x PSF to a small
stamp and keeps the best r. Stars come out near 1; the galaxy's clumps and spiral knots,
being resolved, come out broader and are kept.
The galaxy's own nucleus is protected by a keep-out radius around the image centre. Where
the bundle gives a star catalogue, its positions are the prior and only those are
measured. Each star is replaced by the local background: a piecewise-cubic
(Clough-Tocher) interpolation from the ring around it, plus noise at the measured sky
level so the patch does not stand out as noise-free.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.stats import SigmaClip
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from scipy.interpolate import griddata

#: A point source's fitted width, in units of the PSF FWHM, must not exceed this.
MAX_WIDTH_RATIO = 1.2
WIDTH_RATIOS = np.arange(0.7, 2.01, 0.05)
DETECTION_SIGMA = 5.0
PRIOR_DETECTION_SIGMA = 3.0
PRIOR_MATCH_PX = 2.5


@dataclass(frozen=True)
class PointSource:
    x: float  # pixel, 0-based
    y: float
    fwhm_px: float  # fitted
    peak: float  # fitted Gaussian amplitude above the local background, image units
    from_prior: bool


def sky_statistics(image: np.ndarray, max_pixels: int = 16384) -> tuple[float, float]:
    """Sigma-clipped (median, std) of the image: the sky level and its noise."""
    stride = max(1, math.ceil(math.sqrt(image.size / max_pixels)))
    sample = np.array(image[::stride, ::stride], dtype=np.float64, copy=True).reshape(1, -1)
    clipped = SigmaClip(sigma=3.0, maxiters=10)(sample, axis=1, masked=False, copy=False)
    clipped = clipped[np.isfinite(clipped)]
    if clipped.size < 10:
        raise ValueError(f"sky cannot be estimated: {clipped.size} pixels survive sigma clipping")
    return float(np.median(clipped)), float(np.std(clipped))


def find_point_sources(
    image: np.ndarray,
    psf_fwhm_px: float,
    prior_xy: np.ndarray | None = None,
    keep_out_px: float | None = None,
    sky_std: float | None = None,
) -> list[PointSource]:
    """Stars in a galaxy cutout.

    Parameters
    ----------
    image : 2-D array, background-subtracted flux.
    psf_fwhm_px : PSF FWHM in pixels.
    prior_xy : (N, 2) array of catalogue star positions in pixels, or None to detect blindly.
    keep_out_px : no star is accepted this close to the centre (the galaxy's nucleus);
        default max(2.5 FWHM, 4% of the image size).
    sky_std : sky noise, if the caller has already measured it (:func:`sky_statistics`).

    Returns
    -------
    list of PointSource, brightest first.
    """
    if psf_fwhm_px <= 0:
        raise ValueError(f"PSF FWHM must be positive, got {psf_fwhm_px} px")
    data = np.nan_to_num(image, nan=0.0)
    if sky_std is None:
        _, sky_std = sky_statistics(data)
    keep_out = keep_out_px if keep_out_px is not None else max(2.5 * psf_fwhm_px, 0.04 * min(data.shape))
    centre = ((data.shape[1] - 1) / 2, (data.shape[0] - 1) / 2)
    if prior_xy is not None:
        prior_xy = np.atleast_2d(np.asarray(prior_xy, dtype=float))
        inside = (
            (prior_xy[:, 0] >= 0) & (prior_xy[:, 0] <= data.shape[1] - 1)
            & (prior_xy[:, 1] >= 0) & (prior_xy[:, 1] <= data.shape[0] - 1)
        )  # fmt: skip
        prior_xy = prior_xy[inside]
        if not len(prior_xy):
            return []
    threshold = (PRIOR_DETECTION_SIGMA if prior_xy is not None else DETECTION_SIGMA) * sky_std
    finder = DAOStarFinder(threshold=threshold, fwhm=psf_fwhm_px, sharpness_range=(0.2, 1.0), roundness_range=(-1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        table = finder(data)
    if table is None:
        return []
    found = []
    for row in table:
        x, y = float(row["x_centroid"]), float(row["y_centroid"])
        if math.hypot(x - centre[0], y - centre[1]) < keep_out:
            continue
        from_prior = False
        if prior_xy is not None:
            if np.min(np.hypot(prior_xy[:, 0] - x, prior_xy[:, 1] - y)) > PRIOR_MATCH_PX:
                continue
            from_prior = True
        ratio, amplitude = fitted_width_ratio(data, x, y, psf_fwhm_px)
        if ratio > MAX_WIDTH_RATIO or amplitude <= 0:
            continue  # broader than the PSF: a clump or the galaxy's own structure
        found.append(PointSource(x, y, ratio * psf_fwhm_px, amplitude, from_prior))
    return sorted(found, key=lambda s: -s.peak)


def fitted_width_ratio(image: np.ndarray, x: float, y: float, psf_fwhm_px: float) -> tuple[float, float]:
    """Best-fitting width of a source in units of the PSF FWHM, and its Gaussian amplitude.

    Fits ``plane + A exp(-r^2 / 2 s^2)`` by linear least squares on a stamp of radius
    1.6 FWHM for each s = ratio x FWHM / 2.355 in :data:`WIDTH_RATIOS`; the plane absorbs
    the galaxy light under the source. With the plane projected out, the Gaussian's
    coefficient equals its coefficient in the full fit (Frisch-Waugh-Lovell).
    """
    half = int(math.ceil(1.6 * psf_fwhm_px))
    xi, yi = int(round(x)), int(round(y))
    y0, y1 = max(0, yi - half), min(image.shape[0], yi + half + 1)
    x0, x1 = max(0, xi - half), min(image.shape[1], xi + half + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dx, dy = (xx - x).ravel(), (yy - y).ravel()
    stamp = image[y0:y1, x0:x1].ravel()
    r2 = dx**2 + dy**2
    # The plane (1, dx, dy) is common to every fit: project it out once, then the residual
    # for each width is |s'|^2 - (g'.s')^2 / |g'|^2, for all widths in one matrix product.
    plane = np.column_stack([np.ones_like(dx), dx, dy])
    q, _ = np.linalg.qr(plane)
    sigmas = WIDTH_RATIOS * psf_fwhm_px / 2.3548
    gauss = np.exp(-0.5 * r2[:, None] / sigmas[None, :] ** 2)
    gauss_perp = gauss - q @ (q.T @ gauss)
    stamp_perp = stamp - q @ (q.T @ stamp)
    norms = np.einsum("ij,ij->j", gauss_perp, gauss_perp)
    dots = gauss_perp.T @ stamp_perp
    rss = stamp_perp @ stamp_perp - dots**2 / np.maximum(norms, 1e-30)
    best = int(np.argmin(rss))
    return float(WIDTH_RATIOS[best]), float(dots[best] / max(norms[best], 1e-30))


def replacement_radius(source: PointSource, psf_fwhm_px: float, sky_std: float) -> float:
    """Radius (px) that covers the star's PSF wings down to about the sky noise."""
    snr = max(source.peak / max(sky_std, 1e-30), 1.0)
    return psf_fwhm_px * (1.0 + 0.55 * math.log10(snr))


def remove_point_sources(
    image: np.ndarray, sources: list[PointSource], psf_fwhm_px: float, seed: int = 0, sky_std: float | None = None
) -> np.ndarray:
    """Replace each source by the local background interpolated from the ring around it."""
    out = np.array(image, dtype=np.float64, copy=True)
    if not sources:
        return out
    if sky_std is None:
        _, sky_std = sky_statistics(np.nan_to_num(out, nan=0.0))
    rng = np.random.default_rng(seed)
    ny, nx = out.shape
    for source in sources:
        radius = replacement_radius(source, psf_fwhm_px, sky_std)
        half = int(math.ceil(radius + 4))
        x0, x1 = max(0, int(source.x) - half), min(nx, int(source.x) + half + 2)
        y0, y1 = max(0, int(source.y) - half), min(ny, int(source.y) + half + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dist = np.hypot(xx - source.x, yy - source.y)
        hole = dist <= radius
        ring = (dist > radius) & (dist <= radius + 3) & np.isfinite(out[y0:y1, x0:x1])
        if ring.sum() < 6:
            continue
        points = np.column_stack([yy[ring], xx[ring]])
        values = out[y0:y1, x0:x1][ring]
        targets = np.column_stack([yy[hole], xx[hole]])
        filled = griddata(points, values, targets, method="cubic")
        missing = ~np.isfinite(filled)
        if missing.any():
            filled[missing] = griddata(points, values, targets[missing], method="nearest")
        out[yy[hole], xx[hole]] = filled + rng.normal(0.0, sky_std, filled.shape)
    return out


def subtract_stars(
    image: np.ndarray, psf_fwhm_px: float, prior_xy: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, list[PointSource]]:
    """Find and remove the stars of a cutout; returns the cleaned image and what was removed."""
    _, sky_std = sky_statistics(np.nan_to_num(image, nan=0.0))
    sources = find_point_sources(image, psf_fwhm_px, prior_xy, sky_std=sky_std)
    return remove_point_sources(image, sources, psf_fwhm_px, seed, sky_std=sky_std), sources


def prior_pixels(header, stars_radec) -> np.ndarray:
    """Pixel positions (x, y), 0-based, of catalogue stars [(ra, dec, ...), ...] in a cutout's WCS."""
    from astropy.wcs import WCS, FITSFixedWarning

    radec = np.asarray(stars_radec, dtype=float)
    if radec.size == 0:
        return np.empty((0, 2))
    radec = radec.reshape(len(radec), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    x, y = wcs.world_to_pixel_values(radec[:, 0], radec[:, 1])
    return np.column_stack([x, y])
