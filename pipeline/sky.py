"""HEALPix indexing for cone searches.

Galaxies carry a nested HEALPix index at :data:`INDEX_ORDER`. In the nested scheme every
pixel at a coarser order k covers one contiguous index range at the fine order, so a cone
becomes a handful of integer ranges that an ordinary B-tree index answers, on PostgreSQL
and SQLite alike; an exact angular-distance filter then removes the corners.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import angular_separation
from astropy_healpix import HEALPix

INDEX_ORDER = 16  # nside 65536, pixels of about 3.2 arcsec
INDEX_NSIDE = 2**INDEX_ORDER


def healpix_index(ra_deg, dec_deg) -> np.ndarray:
    """Nested HEALPix index at :data:`INDEX_ORDER` of each position (degrees)."""
    hp = HEALPix(nside=INDEX_NSIDE, order="nested")
    return np.asarray(hp.lonlat_to_healpix(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg), dtype=np.int64)


def cone_query_order(radius_deg: float) -> int:
    """Coarse order whose pixels are about half the cone radius: few pixels, few ranges."""
    nside_wanted = 58.6 / max(radius_deg, 1e-9) / 2.0  # pixel size ~ 58.6 deg / nside
    return int(np.clip(np.floor(np.log2(max(nside_wanted, 1.0))), 0, INDEX_ORDER))


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


def angular_distance_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (Vincenty formula, exact at all separations)."""
    return np.rad2deg(
        angular_separation(np.deg2rad(ra1), np.deg2rad(dec1), np.deg2rad(ra2), np.deg2rad(dec2))
    )
