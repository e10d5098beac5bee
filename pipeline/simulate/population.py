"""Draw a synthetic galaxy population with the selection of the paper's sample.

Each galaxy is built from components (bulge, disk, star-forming clumps) with their own
stellar populations, so M/L, colour and morphology are tied the way the paper relies on:

* M/L_g of a component follows its age: old bulges high (~4), young disks low (~1),
  clumps very low (~0.25). The galaxy's intrinsic M/L is the light-weighted mean.
* Dust attenuation A_g grows with disk inclination and raises the observed M/L
  (M/L_obs = M/L_int x 10**(0.4 A_g)); it reddens g-i by 0.45 A_g, a different direction
  in the colour-M/L plane than age (slope 0.89 instead of 1.45 dex/mag).
* A part of the M/L scatter (metallicity, bursts) is invisible in the colour.
* The sample is cut at r < 17.77 and D25 > 0.4 arcmin, which keeps mostly nearby,
  luminous galaxies (Malmquist bias) as in GSWLC x HyperLeda.

Everything is drawn vectorised from one ``numpy.random.Generator``, so a seed fixes the
population exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.images.photometry import (
    M_SUN_AB,
    angular_diameter_distance_mpc,
    cosmology,
    distance_modulus,
    luminosity_distance_mpc,
)
from pipeline.simulate.instrument import SDSS_PIXEL_SCALE_ARCSEC, Instrument, observe

CLASSES = ("elliptical", "lenticular", "spiral", "irregular", "merger")
CLASS_FRACTIONS = (0.30, 0.17, 0.41, 0.08, 0.04)
LOG_MASS = {  # (mean, sigma) of log10 M*/Msun before selection
    "elliptical": (11.05, 0.35),
    "lenticular": (10.9, 0.35),
    "spiral": (10.7, 0.45),
    "irregular": (9.95, 0.4),
    "merger": (10.9, 0.4),
}
Z_MIN, Z_MAX = 0.01, 0.3
R_LIMIT = 17.77
D25_LIMIT_ARCMIN = 0.4
D25_SB_LIMIT = 25.0 - 0.35  # 25 B mag/arcsec^2 in g (B - g ~ 0.35 for typical galaxies)
#: The pixel scale the population is drawn at (SDSS); :func:`observe` moves it to another instrument's.
PIXSCALE_ARCSEC = SDSS_PIXEL_SCALE_ARCSEC
FOV_PER_D25 = 1.125
MAX_IMAGE_PX = 768
WINDING_PITCH_DEG = {"tight": 12.0, "medium": 20.0, "loose": 30.0}
DUST_REDDENING_GI = 0.45  # E(g-i) / A_g


def intrinsic_gi(ml_g):
    """Dust-free g-i colour (mag) of a stellar population with M/L_g ``ml_g``: the age direction.

    log10 M/L_g = 1.45 (g-i) - 0.95, close to the Zibetti et al. (2009) slope.
    """
    return (np.log10(ml_g) + 0.95) / 1.45


@dataclass
class Population:
    """Column arrays, one entry per selected galaxy."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["z"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def row(self, i: int) -> dict:
        return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.columns.items()}


def _sample_redshift(rng: np.random.Generator, n: int) -> np.ndarray:
    """Redshifts uniform in comoving volume between Z_MIN and Z_MAX."""
    grid = np.linspace(Z_MIN, Z_MAX, 512)
    volume = cosmology().comoving_volume(grid).value
    cdf = (volume - volume[0]) / (volume[-1] - volume[0])
    return np.interp(rng.random(n), cdf, grid)


def _draw_candidates(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cls = rng.choice(len(CLASSES), size=n, p=CLASS_FRACTIONS)
    name = np.array(CLASSES)[cls]
    log_mass = np.empty(n)
    for c in CLASSES:
        sel = name == c
        mean, sigma = LOG_MASS[c]
        log_mass[sel] = rng.normal(mean, sigma, sel.sum())
    z = _sample_redshift(rng, n)
    cos_i = rng.random(n)  # uniform in cos i: random orientation
    is_disk = np.isin(name, ["lenticular", "spiral", "merger"])
    cos_i = np.where(is_disk | (name == "irregular"), cos_i, 1.0)
    incl_deg = np.rad2deg(np.arccos(cos_i))

    # Light fractions (g band, intrinsic) of bulge / disk / clumps.
    bt = np.select(
        [name == "elliptical", name == "lenticular", name == "spiral", name == "irregular"],
        [rng.uniform(0.9, 1.0, n), rng.uniform(0.35, 0.7, n), rng.beta(1.3, 3.2, n) * 0.7, np.zeros(n)],
        rng.uniform(0.3, 0.6, n),
    )
    clump = np.select(
        [name == "spiral", name == "irregular", name == "merger"],
        [rng.uniform(0.03, 0.15, n), rng.uniform(0.3, 0.55, n), rng.uniform(0.05, 0.2, n)],
        0.0,
    )
    disk = np.clip(1.0 - bt - clump, 0.0, 1.0)
    bt = np.clip(1.0 - disk - clump, 0.0, 1.0)

    # Component M/L_g (intrinsic): old bulges, younger disks, young clumps.
    ml_bulge = 10 ** rng.normal(0.7 + 0.08 * (log_mass - 10.7), 0.08, n)
    disk_age = np.select([name == "lenticular", name == "irregular"], [0.32, -0.3], -0.22 + 0.12 * (log_mass - 10.3))
    ml_disk = 10 ** rng.normal(disk_age, 0.13, n)
    ml_clump = 10 ** rng.normal(-0.6, 0.1, n)
    ml_int = bt * ml_bulge + disk * ml_disk + clump * ml_clump
    hidden = rng.normal(0.0, 0.06, n)  # M/L scatter the colour does not show
    ml_int = ml_int * 10**hidden

    # Dust: grows with inclination for disks.
    a_face = np.select(
        [name == "spiral", name == "lenticular", name == "irregular", name == "merger"],
        [rng.uniform(0.1, 0.35, n), rng.uniform(0.05, 0.15, n), rng.uniform(0.05, 0.25, n), rng.uniform(0.2, 0.6, n)],
        rng.uniform(0.0, 0.08, n),
    )
    q0 = 0.13
    q_disk = np.sqrt(cos_i**2 * (1 - q0**2) + q0**2)
    dust_slope = np.where(name == "spiral", 0.25, np.where(name == "lenticular", 0.1, 0.15))
    a_g = a_face + dust_slope * (1.0 / q_disk - 1.0) ** 0.8 * (1 - bt * 0.5)
    ml_obs = ml_int * 10 ** (0.4 * a_g)

    # Colours: intrinsic g-i from the (light-weighted) stellar population, then dust.
    gi_component = {"bulge": intrinsic_gi(ml_bulge), "disk": intrinsic_gi(ml_disk), "clump": intrinsic_gi(ml_clump)}
    i_flux = sum(f * 10 ** (0.4 * gi_component[k]) for k, f in (("bulge", bt), ("disk", disk), ("clump", clump)))
    gi_int = 2.5 * np.log10(i_flux) + rng.normal(0, 0.03, n)
    gi_obs = gi_int + DUST_REDDENING_GI * a_g

    l_g = 10**log_mass / ml_obs  # observed (attenuated) g luminosity, Lsun,g
    d_l = luminosity_distance_mpc(z)
    d_a = angular_diameter_distance_mpc(z)
    mag_g = M_SUN_AB["g"] - 2.5 * np.log10(l_g) + distance_modulus(d_l)
    gr = 0.63 * gi_obs - 0.02
    mag_r = mag_g - gr

    # Sizes (kpc): disk scale length and bulge effective radius from mass-size relations.
    r_disk_kpc = 10 ** (0.45 + 0.25 * (log_mass - 10.3) + rng.normal(0, 0.11, n))
    r_disk_kpc = np.where(name == "irregular", r_disk_kpc * 0.9, r_disk_kpc)
    r_bulge_kpc = np.where(
        name == "elliptical",
        10 ** (0.4 + 0.55 * (log_mass - 10.8) + rng.normal(0, 0.1, n)),
        r_disk_kpc * rng.uniform(0.08, 0.2, n) * (1 + bt),
    )
    kpc_per_arcsec = d_a * 1e3 * np.pi / (180 * 3600)
    r_disk_as = r_disk_kpc / kpc_per_arcsec
    r_bulge_as = r_bulge_kpc / kpc_per_arcsec
    d25 = _isophotal_diameter_arcmin(mag_g, bt, disk + clump, r_bulge_as, r_disk_as, z)
    return {
        "class": name,
        "log_mass": log_mass,
        "z": z,
        "cos_i": cos_i,
        "inclination_deg": incl_deg,
        "q_disk": q_disk,
        "bulge_frac": bt,
        "disk_frac": disk,
        "clump_frac": clump,
        "ml_bulge": ml_bulge,
        "ml_disk": ml_disk,
        "ml_clump": ml_clump,
        "ml_int": ml_int,
        "a_g": a_g,
        "ml_true": ml_obs,
        "gi_true": gi_obs,
        "lum_g_true": l_g,
        "mag_g_true": mag_g,
        "mag_r_true": mag_r,
        "r_disk_arcsec": r_disk_as,
        "r_bulge_arcsec": r_bulge_as,
        "d25_arcmin": d25,
        "kpc_per_pixel": kpc_per_arcsec * PIXSCALE_ARCSEC,
    }


def _isophotal_diameter_arcmin(mag_g, bt, df, r_b, r_d, z) -> np.ndarray:
    """Major-axis diameter where the face-on surface brightness falls to D25_SB_LIMIT."""
    dimming = 10 * np.log10(1 + z)  # (1+z)^4 surface-brightness dimming, in mag
    flux = 10 ** (-0.4 * mag_g)
    # Exponential disk: mu(R) = mu0 + 1.0857 R / r_d, with mu0 from the disk flux.
    mu0 = -2.5 * np.log10(np.maximum(df * flux, 1e-30) / (2 * np.pi * r_d**2)) + dimming
    r25_disk = np.where(df > 0, r_d * np.maximum(D25_SB_LIMIT - mu0, 0) / 1.0857, 0.0)
    # de Vaucouleurs bulge: mu(R) = mu_e + 8.327 ((R/r_e)^(1/4) - 1), <mu>_e = mu_e - 1.393.
    mu_e = -2.5 * np.log10(np.maximum(bt * flux, 1e-30) / (2 * np.pi * r_b**2)) + 1.393 + dimming
    r25_bulge = np.where(bt > 0, r_b * np.maximum(1 + (D25_SB_LIMIT - mu_e) / 8.327, 0) ** 4, 0.0)
    return 2 * np.maximum(r25_disk, r25_bulge) / 60.0


def draw_population(n: int, seed: int, instrument: Instrument | None = None) -> Population:
    """Draw ``n`` galaxies that pass the sample selection (r < 17.77, D25 > 0.4 arcmin), observed
    with ``instrument`` (default SDSS's): the same seed gives the same galaxies whatever the instrument."""
    rng = np.random.default_rng(seed)
    chunks: list[dict[str, np.ndarray]] = []
    have = 0
    while have < n:
        cand = _draw_candidates(rng, max(20 * (n - have), 2000))
        keep = (cand["mag_r_true"] < R_LIMIT) & (cand["d25_arcmin"] > D25_LIMIT_ARCMIN)
        chunks.append({k: v[keep] for k, v in cand.items()})
        have += int(keep.sum())
    cols = {k: np.concatenate([c[k] for c in chunks])[:n] for k in chunks[0]}
    _add_structure(rng, cols)
    _add_observation(rng, cols, seed)
    observe(cols, instrument or Instrument(), MAX_IMAGE_PX, FOV_PER_D25)
    return Population(cols)


def _add_structure(rng: np.random.Generator, cols: dict[str, np.ndarray]) -> None:
    """Spiral arms, bars, orientation and mergers' companions."""
    n = len(cols["z"])
    name = cols["class"]
    spiral = name == "spiral"
    cols["n_arms"] = np.where(spiral, rng.choice([1, 2, 3, 4, 5], n, p=[0.07, 0.55, 0.2, 0.1, 0.08]), 0)
    winding = rng.choice(list(WINDING_PITCH_DEG), n, p=[0.35, 0.4, 0.25])
    # Bulge-dominated spirals wind tighter (Hubble sequence).
    winding = np.where(spiral & (cols["bulge_frac"] > 0.35), "tight", winding)
    cols["winding"] = np.where(spiral, winding, "")
    cols["pitch_deg"] = np.array([WINDING_PITCH_DEG.get(w, 0.0) for w in cols["winding"]]) + rng.normal(0, 2, n) * spiral
    cols["arm_strength"] = np.where(spiral, rng.uniform(0.4, 0.85, n), 0.0)
    cols["barred"] = (spiral & (rng.random(n) < 0.35)) | ((name == "lenticular") & (rng.random(n) < 0.15))
    cols["pa_deg"] = rng.uniform(0, 180, n)
    cols["arm_phase"] = rng.uniform(0, 2 * np.pi, n)
    cols["bar_angle_deg"] = rng.uniform(0, 180, n)
    cols["q_bulge"] = np.where(name == "elliptical", rng.uniform(0.55, 1.0, n), rng.uniform(0.75, 1.0, n))
    cols["dust_lane"] = np.isin(name, ["spiral", "lenticular", "merger"]) & (cols["inclination_deg"] > 76)
    cols["companion_offset"] = np.where(name == "merger", rng.uniform(1.0, 2.2, n), 0.0)  # in disk scale lengths
    cols["companion_flux"] = np.where(name == "merger", rng.uniform(0.6, 1.5, n), 0.0)
    cols["lopsided"] = np.where(np.isin(name, ["irregular", "merger"]), rng.uniform(0.2, 0.5, n), 0.0)


def _add_observation(rng: np.random.Generator, cols: dict[str, np.ndarray], seed: int) -> None:
    """Sky position, ids, observing conditions and the noisy SED-fit targets."""
    n = len(cols["z"])
    stripe = rng.random(n) < 0.15  # an equatorial stripe across RA = 0, like SDSS Stripe 82
    ra = np.where(stripe, np.mod(rng.uniform(-50, 60, n), 360), rng.uniform(110, 260, n))
    sin_dec = np.where(stripe, 0, rng.uniform(np.sin(np.deg2rad(-5)), np.sin(np.deg2rad(68)), n))
    dec = np.where(stripe, rng.uniform(-1.25, 1.25, n), np.rad2deg(np.arcsin(sin_dec)))
    cols["ra"], cols["dec"] = ra, dec
    cols["objid"] = 1237640000000000000 + (seed % 1000) * 10_000_000 + np.arange(n, dtype=np.int64) * 7 + 3
    cols["psf_fwhm_g"] = np.clip(rng.lognormal(np.log(1.4), 0.15, n), 0.9, 2.4)
    cols["psf_fwhm_i"] = cols["psf_fwhm_g"] * rng.uniform(0.85, 0.95, n)
    cols["image_seed"] = rng.integers(0, 2**31, n)

    # Catalogue photometry with errors.
    cols["magerr_g"] = np.clip(0.01 + 0.02 * 10 ** (0.4 * (cols["mag_g_true"] - 17.5)) + rng.exponential(0.003, n), 0.005, 0.2)
    cols["magerr_i"] = cols["magerr_g"] * rng.uniform(0.8, 1.1, n)
    cols["mag_g"] = cols["mag_g_true"] + rng.normal(0, cols["magerr_g"])
    cols["mag_i"] = cols["mag_g_true"] - cols["gi_true"] + rng.normal(0, cols["magerr_i"])
    gi = cols["gi_true"]
    cols["mag_r"] = cols["mag_r_true"] + rng.normal(0, cols["magerr_g"])
    cols["mag_u"] = cols["mag_g_true"] + 0.95 + 1.1 * gi + rng.normal(0, 0.08, n)
    cols["mag_z"] = cols["mag_g_true"] - 1.28 * gi + rng.normal(0, 0.04, n)
    for band in "urz":
        cols[f"magerr_{band}"] = cols["magerr_g"] * (2.5 if band == "u" else 1.2)

    # SED-fit target: a noisy Bayesian estimate with its error; a few poor fits (chi2_r >= 5).
    log_ml = np.log10(cols["ml_true"])
    rel_err = np.clip(0.05 + 0.12 * (log_ml - np.log10(0.3)) / 1.6 + rng.normal(0, 0.03, n), 0.03, 0.25)
    chi2 = 10 ** rng.normal(0.0, 0.22, n)
    outlier = rng.random(n) < 0.035
    chi2 = np.where(outlier, rng.uniform(5, 40, n), np.minimum(chi2, 4.9))
    ml_est = cols["ml_true"] * np.exp(rng.normal(0, 0.8 * rel_err)) * np.where(outlier, 10 ** rng.normal(0, 0.35, n), 1)
    cols["ml_g"] = ml_est
    cols["ml_g_err"] = rel_err * ml_est
    cols["chi2_r"] = chi2
