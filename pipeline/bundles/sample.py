"""The learning sample (docs/bundles.md): M/L targets, sample cuts and the split.

Given parsed catalogue rows (``pipeline.bundles.reader``) and optionally GSWLC, this derives the
distances, L_g and the M/L target, says why a galaxy stays outside the learning sample
(D25 <= 0.4 arcmin, no target, chi2_r >= 5), and assigns the seeded train/val/test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from pipeline.bundles.reader import CatalogueRows
from pipeline.images.photometry import cosmology, luminosity_distance_mpc, luminosity_lsun, ml_from_stellar_mass
from pipeline.sky import healpix_index

# Sample cuts (docs/bundles.md).
MIN_D25_ARCMIN = 0.4
MAX_CHI2_R = 5.0
TEST_FRACTION = 0.10
VAL_FRACTION_OF_REST = 0.10
#: mag. A missing g magnitude error is taken as this, not as zero, when the M/L error is
#: propagated: about twice the largest error of SDSS model magnitudes of galaxies this
#: bright, so an unknown error can only widen the target's error, never shrink it.
#: Galaxies where it was used carry ``extra['assumed'] = {'magerr_g': 0.05}``.
ASSUMED_MAGERR_G = 0.05


def split_uniform(objid: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per galaxy from (objid, seed): SplitMix64 hashing.

    Hashing rather than shuffling keeps each galaxy's split stable when a bundle is
    re-ingested with rows added or removed, so no test galaxy ever leaks into training.
    """
    x = objid.astype(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def assign_splits(objid: np.ndarray, learning: np.ndarray, seed: int) -> np.ndarray:
    """'test' for 10%, 'val' for 10% of the rest, 'train' otherwise; '' outside the learning sample."""
    u = split_uniform(objid, seed)
    val_edge = TEST_FRACTION + (1 - TEST_FRACTION) * VAL_FRACTION_OF_REST
    split = np.where(u < TEST_FRACTION, "test", np.where(u < val_edge, "val", "train"))
    return np.where(learning, split, "").astype(object)


@dataclass
class DerivedColumns:
    """Everything ingest computes from the parsed catalogue (and GSWLC)."""

    lum_dist_mpc: np.ndarray
    lum_g: np.ndarray
    ml_g: np.ndarray
    ml_g_err: np.ndarray
    chi2_r: np.ndarray
    healpix: np.ndarray
    ml_source: np.ndarray  # 'catalogue', 'gswlc' or ''
    assumed_magerr_g: np.ndarray  # bool: the target error used ASSUMED_MAGERR_G


def derive_columns(rows: CatalogueRows, gswlc: Table | None, h0: float = 70.0, om0: float = 0.3) -> DerivedColumns:
    """Distances, L_g, the M/L target (catalogue first, else GSWLC) and HEALPix indices."""
    v = rows.values
    z = np.where(np.isfinite(v["z"]) & (v["z"] >= 0), v["z"], np.nan)
    d_l = np.full(len(rows), np.nan)
    ok_z = np.isfinite(z)
    if ok_z.any():
        d_l[ok_z] = luminosity_distance_mpc(z[ok_z], cosmology(h0, om0))
    with np.errstate(invalid="ignore", divide="ignore"):
        lum_g = luminosity_lsun(v["mag_g"], d_l, "g")
    ml, ml_err, chi2 = v["ml_g"].copy(), v["ml_g_err"].copy(), v["chi2_r"].copy()
    source = np.where(np.isfinite(ml), "catalogue", "").astype(object)
    assumed = np.zeros(len(rows), bool)
    if gswlc is not None and len(gswlc):
        gid = np.asarray(gswlc["objid"], dtype=np.int64)
        order = np.argsort(gid)
        pos = np.searchsorted(gid[order], rows.objid)
        pos = np.clip(pos, 0, len(gid) - 1)
        matched = gid[order][pos] == rows.objid
        j = order[pos]

        def col(name):
            return np.ma.filled(np.ma.asarray(gswlc[name], dtype=float), np.nan)[j]

        log_m, log_m_err, g_chi2 = col("log_mstar"), col("log_mstar_err"), col("chi2_r")
        magerr_g = np.where(np.isfinite(v["magerr_g"]), v["magerr_g"], ASSUMED_MAGERR_G)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            g_ml, g_err = ml_from_stellar_mass(log_m, log_m_err, v["mag_g"], magerr_g, d_l)
        use = matched & ~np.isfinite(ml) & np.isfinite(g_ml) & (g_err > 0)
        ml[use], ml_err[use] = g_ml[use], g_err[use]
        source[use] = "gswlc"
        assumed = use & ~np.isfinite(v["magerr_g"])
        fill_chi2 = matched & ~np.isfinite(chi2) & np.isfinite(g_chi2)
        chi2[fill_chi2] = g_chi2[fill_chi2]
    ra = np.where(np.isfinite(v["ra"]), v["ra"], 0.0)
    dec = np.where(np.isfinite(v["dec"]) & (np.abs(v["dec"]) <= 90), v["dec"], 0.0)
    return DerivedColumns(d_l, lum_g, ml, ml_err, chi2, healpix_index(np.mod(ra, 360.0), dec), source, assumed)


def learning_sample_reasons(rows: CatalogueRows, derived: DerivedColumns) -> list[list[tuple[str, str]]]:
    """Why each galaxy stays outside the learning sample, as (kind, message); empty if it is in."""
    d25 = rows.values["d25_arcmin"]
    with np.errstate(invalid="ignore"):
        small = d25 <= MIN_D25_ARCMIN  # a sample without D25 (a prediction job's) is not "small"
        no_target = ~np.isfinite(derived.ml_g) | ~np.isfinite(derived.ml_g_err)
        high_chi2 = np.isfinite(derived.chi2_r) & (derived.chi2_r >= MAX_CHI2_R)
    out: list[list[tuple[str, str]]] = [[] for _ in range(len(rows))]
    for j in np.flatnonzero(small):
        out[j].append(("small_d25", f"D25 = {d25[j]:.3g} arcmin <= {MIN_D25_ARCMIN}"))
    for j in np.flatnonzero(no_target):
        out[j].append(("no_target", "no M/L target"))
    for j in np.flatnonzero(high_chi2):
        out[j].append(("high_chi2", f"chi2_r = {derived.chi2_r[j]:.3g} >= {MAX_CHI2_R}"))
    return out
