"""Distances, luminosities and the M/L target (docs/bundles.md).

All luminosities are in solar units of the same band, from AB magnitudes and the AB solar
absolute magnitudes of Willmer (2018).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from astropy.cosmology import FlatLambdaCDM

#: AB absolute magnitudes of the Sun (Willmer 2018).
M_SUN_AB = {"u": 6.39, "g": 5.11, "r": 4.65, "i": 4.53, "z": 4.50}

#: SDSS flux zero point: m = 22.5 - 2.5 log10(flux in nanomaggies).
NANOMAGGY_ZERO_POINT = 22.5

LN10 = np.log(10.0)


@lru_cache(maxsize=16)
def cosmology(h0: float = 70.0, om0: float = 0.3) -> FlatLambdaCDM:
    """The survey's cosmology; FlatLambdaCDM(H0=70, Om0=0.3) unless the survey says otherwise.

    Cached: building one costs tens of milliseconds (astropy unit composition).
    """
    return FlatLambdaCDM(H0=h0, Om0=om0)


def luminosity_distance_mpc(z, cosmo: FlatLambdaCDM | None = None) -> np.ndarray:
    """Luminosity distance in Mpc for redshift(s) ``z``."""
    cosmo = cosmo or cosmology()
    return np.asarray(cosmo.luminosity_distance(np.asarray(z, dtype=float)).to_value("Mpc"))


def angular_diameter_distance_mpc(z, cosmo: FlatLambdaCDM | None = None) -> np.ndarray:
    """Angular diameter distance in Mpc: sets the physical size of a pixel."""
    cosmo = cosmo or cosmology()
    return np.asarray(cosmo.angular_diameter_distance(np.asarray(z, dtype=float)).to_value("Mpc"))


def distance_modulus(d_l_mpc) -> np.ndarray:
    """5 log10(D_L / 10 pc), in mag."""
    return 5.0 * np.log10(np.asarray(d_l_mpc, dtype=float) * 1e5)


def luminosity_lsun(mag, d_l_mpc, band: str = "g") -> np.ndarray:
    """L_band / Lsun,band = 10**(-0.4 (m - DM - M_sun,band)) for AB magnitude(s) ``mag``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - distance_modulus(d_l_mpc) - M_SUN_AB[band]))


def nanomaggies_to_lsun(flux_nmgy, d_l_mpc, band: str = "g") -> np.ndarray:
    """Convert flux(es) in nanomaggies to luminosity in Lsun,band (flux x 4 pi D_L^2).

    Linear in flux, so negative sky-noise pixels map to negative luminosity and sums stay
    unbiased.
    """
    scale = 10.0 ** (-0.4 * (NANOMAGGY_ZERO_POINT - distance_modulus(d_l_mpc) - M_SUN_AB[band]))
    return np.asarray(flux_nmgy, dtype=float) * scale


def pixel_size_kpc(pixscale_arcsec: float, z, cosmo: FlatLambdaCDM | None = None) -> np.ndarray:
    """Physical size of one pixel in kpc at redshift ``z``."""
    d_a_kpc = angular_diameter_distance_mpc(z, cosmo) * 1e3
    return d_a_kpc * np.deg2rad(pixscale_arcsec / 3600.0)


def ml_from_stellar_mass(log_mstar, log_mstar_err, mag_g, magerr_g, d_l_mpc) -> tuple[np.ndarray, np.ndarray]:
    """M/L_g and its 1-sigma error from a stellar mass (GSWLC) and the g magnitude.

    M/L = 10**log_mstar / L_g. The error adds the two independent relative errors in
    quadrature, in natural log:
    (sigma_ML / ML)^2 = (ln10 * sigma_logM)^2 + (0.4 ln10 * sigma_g)^2.

    Returns
    -------
    ml_g, ml_g_err : arrays, Msun/Lsun,g
    """
    lum_g = luminosity_lsun(mag_g, d_l_mpc, "g")
    ml = 10.0 ** np.asarray(log_mstar, dtype=float) / lum_g
    rel = np.hypot(LN10 * np.asarray(log_mstar_err, dtype=float), 0.4 * LN10 * np.asarray(magerr_g, dtype=float))
    return ml, ml * rel
