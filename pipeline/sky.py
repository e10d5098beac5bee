"""HEALPix indexing and unit vectors for cone searches done entirely in SQL.

Galaxies carry a nested HEALPix index at :data:`INDEX_ORDER`. In the nested scheme every
pixel at a coarser order k covers one contiguous index range at the fine order, so a cone
becomes a few dozen integer ranges that an ordinary B-tree index on (survey, healpix)
answers, on PostgreSQL and SQLite alike. Each galaxy also stores the unit vector of its
position: a galaxy is inside a cone of radius r around the unit vector c exactly when
x . c >= cos(r), a dot product the database evaluates on the candidate rows.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix

INDEX_ORDER = 16  # nside 65536, pixels of about 3.2 arcsec
INDEX_NSIDE = 2**INDEX_ORDER


def healpix_index(ra_deg, dec_deg) -> np.ndarray:
    """Nested HEALPix index at :data:`INDEX_ORDER` of each position (degrees)."""
    hp = HEALPix(nside=INDEX_NSIDE, order="nested")
    return np.asarray(hp.lonlat_to_healpix(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg), dtype=np.int64)


#: A HEALPix pixel at resolution nside is about this many degrees across (sqrt(4 pi / 12) rad).
PIXEL_DEG_AT_NSIDE_1 = 58.6


def cone_query_order(radius_deg: float) -> int:
    """The coarsest order whose pixels are at most half the cone radius across.

    Pixels of half the radius cover the cone with about 30 pixels and an area within
    about three times the cone's; larger pixels cover far more sky than asked for.
    """
    nside_wanted = 2.0 * PIXEL_DEG_AT_NSIDE_1 / max(radius_deg, 1e-9)
    return int(np.clip(np.ceil(np.log2(max(nside_wanted, 1.0))), 0, INDEX_ORDER))


def unit_vector(ra_deg, dec_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) on the unit sphere of each position (degrees)."""
    ra, dec = np.deg2rad(np.asarray(ra_deg, dtype=float)), np.deg2rad(np.asarray(dec_deg, dtype=float))
    return np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)


def chord2(radius_deg: float) -> float:
    """The squared chord between unit vectors ``radius_deg`` apart (capped at 180 deg).

    A position is within the radius of another exactly when the squared distance of their unit
    vectors is at most this; unlike cos(r), it keeps its precision at arcsecond radii.
    """
    return float((2.0 * np.sin(np.deg2rad(min(max(float(radius_deg), 0.0), 180.0)) / 2.0)) ** 2)


def cone_index_ranges(ra_deg: float, dec_deg: float, radius_deg: float) -> list[tuple[int, int]]:
    """Half-open ranges [lo, hi) of fine-order indices that cover the cone.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Cone centre, degrees.
    radius_deg : float
        Cone radius, degrees, in (0, 180].
    """
    if not 0 < radius_deg <= 180:
        raise ValueError(f"cone radius must be in (0, 180] deg, got {radius_deg}")
    if not -90 <= dec_deg <= 90:
        raise ValueError(f"dec must be in [-90, 90] deg, got {dec_deg}")
    order = cone_query_order(radius_deg)
    hp = HEALPix(nside=2**order, order="nested")
    pixels = np.unique(hp.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, radius_deg * u.deg))
    shift = 2 * (INDEX_ORDER - order)
    ranges: list[tuple[int, int]] = []
    for pixel in pixels.tolist():
        lo, hi = pixel << shift, (pixel + 1) << shift
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


#: HEALPix order of a survey's footprint MOC: 3.4 arcmin cells, a few times a galaxy's cutout.
MOC_ORDER = 10


def footprint_moc(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int = MOC_ORDER):
    """The IVOA MOC (mocpy) of the HEALPix cells at ``order`` that hold at least one position."""
    from mocpy import MOC

    ra, dec = np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float)
    keep = np.isfinite(ra) & np.isfinite(dec)
    if not keep.any():
        raise ValueError("no position to draw a footprint from")
    return MOC.from_lonlat(np.mod(ra[keep], 360.0) * u.deg, dec[keep] * u.deg, max_norder=int(order))
