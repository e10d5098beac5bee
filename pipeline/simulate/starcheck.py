"""Judge star removal against the truth: each synthetic cutout is also rendered without stars.

For every cutout with stars, the star-removed image is compared with the star-free one
(the same noise draws): the ratio of their automatic scaling values, how far the
log-scaled images differ outside the galaxy core, and whether the filled pixels carry the
local sky noise. Used by the tests and ``benchmarks/preprocess.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from pipeline.images.preprocess import ImageMeta, preprocess
from pipeline.images.stars import find_point_sources, subtract_stars
from pipeline.simulate.survey import starfree_dir

#: Pixels within this fraction of the image size from the centre are the galaxy core.
CORE_FRACTION = 0.15
_META = ImageMeta(redshift=0.05, lum_dist_mpc=200.0, pixel_kpc=0.4)  # the scaling value does not depend on it


def _stars_in(header: fits.Header, stars: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    x, y = wcs.world_to_pixel_values(stars[:, 0], stars[:, 1])
    inside = (x >= -3) & (x <= shape[1] + 2) & (y >= -3) & (y <= shape[0] + 2)
    return np.column_stack([x[inside], y[inside]])


def compare_star_removal(bundle: str | Path, prior: bool = True, limit: int | None = None) -> Table:
    """One row per cutout with stars: scaling values with removal and star-free, and the residuals.

    Columns: objid, n_stars, n_removed, a_removed, a_starfree, a_ratio, log_residual
    (median |difference| of the log-scaled images outside the core), filled_std_ratio
    (std of the filled pixels over the std of the same pixels star-free; NaN when
    nothing was filled).
    """
    bundle = Path(bundle)
    truth = Table.read(bundle / "truth.csv", format="ascii.csv")
    stars_table = Table.read(bundle / "stars.csv", format="ascii.csv")
    stars = np.column_stack([np.asarray(stars_table["ra"], float), np.asarray(stars_table["dec"], float)])
    rows = []
    for objid, n_stars, fault in zip(truth["objid"], truth["n_stars"], truth["fault"], strict=True):
        if n_stars == 0 or (isinstance(fault, str) and fault):
            continue
        free_path = starfree_dir(bundle) / f"{objid}_g.fits"
        image_path = bundle / "images" / f"{objid}_g.fits"
        if not free_path.exists() or not image_path.exists():
            continue
        with fits.open(image_path) as hdul:
            header, data = hdul[0].header, hdul[0].data.astype(np.float64)
        starfree = fits.getdata(free_path).astype(np.float64)
        psf_px = float(header["PSF_FWHM"]) / float(header["PIXSCALE"])
        prior_xy = _stars_in(header, stars, data.shape) if prior else None
        cleaned, removed, filled = subtract_stars(data, psf_px, prior_xy, seed=int(objid) % 2**32, return_mask=True)
        try:
            with_removal = preprocess(cleaned, _META)
            reference = preprocess(starfree, _META)
        except ValueError:
            continue
        n = data.shape[0]
        yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
        outside = np.hypot(xx - (data.shape[1] - 1) / 2, yy - (n - 1) / 2) > CORE_FRACTION * n
        residual = float(np.median(np.abs(with_removal.log_image - reference.log_image)[outside]))
        std_ratio = float(np.std(cleaned[filled]) / np.std(starfree[filled])) if filled.sum() >= 10 else np.nan
        rows.append(
            (
                int(objid),
                int(n_stars),
                len(removed),
                with_removal.scaling_value,
                reference.scaling_value,
                with_removal.scaling_value / reference.scaling_value,
                residual,
                std_ratio,
            )
        )
        if limit and len(rows) >= limit:
            break
    names = ("objid", "n_stars", "n_removed", "a_removed", "a_starfree", "a_ratio", "log_residual", "filled_std_ratio")
    return Table(rows=rows, names=names) if rows else Table(names=names)


def ratio_table(comparison: Table) -> list[dict]:
    """Median scaling-value ratio (removed / star-free) per number of stars in the cutout."""
    out = []
    for n_stars in sorted(set(comparison["n_stars"].tolist())):
        sel = comparison["n_stars"] == n_stars
        std = comparison["filled_std_ratio"][sel]
        out.append(
            {
                "n_stars": int(n_stars),
                "cutouts": int(sel.sum()),
                "median_a_ratio": round(float(np.median(comparison["a_ratio"][sel])), 3),
                "median_log_residual": round(float(np.median(comparison["log_residual"][sel])), 4),
                "median_filled_std_ratio": round(float(np.nanmedian(std)), 3) if np.isfinite(std).any() else None,
            }
        )
    return out


def detection_counts(bundle: str | Path, prior: bool = False, match_px: float = 2.5) -> dict:
    """Stars found and false detections over every cutout of a bundle, against stars.csv.

    A detection within ``match_px`` of a true star (inside the cutout) counts as found;
    any other detection is false (a clump or a bulge taken for a star).
    """
    bundle = Path(bundle)
    stars_table = Table.read(bundle / "stars.csv", format="ascii.csv")
    stars = np.column_stack([np.asarray(stars_table["ra"], float), np.asarray(stars_table["dec"], float)])
    true_total = found = false = cutouts = 0
    for path in sorted((bundle / "images").glob("*_g.fits")):
        try:
            with fits.open(path) as hdul:
                header, data = hdul[0].header, hdul[0].data.astype(np.float64)
            psf_px = float(header["PSF_FWHM"]) / float(header["PIXSCALE"])
            truth = _stars_in(header, stars, data.shape)
        except Exception:  # the faulted bundle has unreadable files and broken headers on purpose
            continue
        if data.ndim != 2 or not np.isfinite(data).any() or np.nanstd(data) == 0:
            continue
        truth = truth[
            (truth[:, 0] >= 0) & (truth[:, 0] <= data.shape[1] - 1) & (truth[:, 1] >= 0) & (truth[:, 1] <= data.shape[0] - 1)
        ]
        detected = find_point_sources(data, psf_px, truth if prior else None)
        cutouts += 1
        true_total += len(truth)
        for source in detected:
            if len(truth) and np.min(np.hypot(truth[:, 0] - source.x, truth[:, 1] - source.y)) <= match_px:
                found += 1
            else:
                false += 1
    return {"cutouts": cutouts, "true_stars": true_total, "found": found, "false": false, "prior": prior}
