"""Write a synthetic survey as a normal bundle (docs/bundles.md), plus truth.csv.

``simulate_survey(out_dir, n, seed)`` draws the population, renders the cutouts in
parallel (one process per worker, each galaxy seeded on its own, so the output does not
depend on the number of workers), writes catalogue.csv, gswlc.dat, gz2.csv, stars.csv and
truth.csv, and optionally injects every kind of fault the ingest must survive.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from pipeline import gz2
from pipeline.bundles.reader import GSWLC_COLUMNS, GSWLC_MISSING
from pipeline.images.photometry import LN10
from pipeline.simulate import images
from pipeline.simulate.instrument import Instrument
from pipeline.simulate.population import Population, draw_population
from pipeline.simulate.votes import simulate_votes

log = logging.getLogger(__name__)

GZ2_COVERAGE = 0.8
CATALOGUE_COLUMNS = (
    "objid",
    "ra",
    "dec",
    "z",
    "d25_arcmin",
    *(f"mag_{b}" for b in "ugriz"),
    *(f"magerr_{b}" for b in "ugriz"),
)
TRUTH_COLUMNS = (
    "objid",
    "class",
    "log_mass",
    "ml_true",
    "ml_int",
    "a_g",
    "gi_true",
    "bulge_frac",
    "disk_frac",
    "clump_frac",
    "inclination_deg",
    "pa_deg",
    "n_arms",
    "winding",
    "pitch_deg",
    "barred",
    "dust_lane",
    "r_disk_arcsec",
    "r_bulge_arcsec",
    "kpc_per_pixel",
    "psf_fwhm_g",
    "n_stars",
    "fault",
)
FAULT_KINDS = (
    "corrupt_fits",
    "missing_fits",
    "nan_image",
    "duplicate_objid",
    "missing_redshift",
    "negative_redshift",
    "nonpositive_error",
    "unparseable_number",
    "missing_wcs",
    "blank_image",
)
#: Faults the ingest accepts: they surface later (preprocessing records them per galaxy).
LATE_FAULTS = ("blank_image",)


@dataclass
class SimulationSummary:
    out_dir: str
    n: int
    seed: int
    seconds: float
    faults: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    instrument: dict[str, float] = field(default_factory=dict)


def image_header(p: dict, band: str) -> fits.Header:
    """The FITS header docs/bundles.md asks for: TAN WCS centred on the galaxy, BUNIT, PIXSCALE, PSF_FWHM, BAND."""
    n = int(p["size_px"])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [p["ra"], p["dec"]]
    wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    scale = images.pixel_scale(p)
    wcs.wcs.cd = np.array([[-scale / 3600, 0], [0, scale / 3600]])
    header = wcs.to_header()
    header["BUNIT"] = ("nanomaggy", "flux per pixel")
    header["PIXSCALE"] = (scale, "arcsec/pixel")
    header["PSF_FWHM"] = (round(float(p[f"psf_fwhm_{band}"]), 4), "arcsec")
    header["BAND"] = (band, "SDSS filter")
    header["OBJID"] = (str(p["objid"]), "photometric object id")
    header["ORIGIN"] = "MorphoMass synthetic survey"
    return header


def render_and_write(args: tuple[dict, str]) -> list[tuple[float, float, float]]:
    """Render one galaxy's g and i cutouts into ``images/``; returns its stars (ra, dec, mag_g)."""
    p, out_dir = args
    rng = np.random.default_rng(int(p["image_seed"]))
    stars = images.draw_stars(p, rng)
    for k, band in enumerate(("g", "i")):
        clean = images.render_galaxy(p, band)
        with_stars = images.add_stars(clean, stars, band, p[f"psf_fwhm_{band}"], images.pixel_scale(p))
        noise_seed = int(p["image_seed"]) * 2 + k
        sky_sigma = images.sky_sigma_nmgy(p, band)
        noisy = images.add_noise(with_stars, band, noise_seed, sky_sigma)
        header = image_header(p, band)
        fits.PrimaryHDU(noisy.astype(np.float32), header=header).writeto(
            Path(out_dir) / "images" / f"{p['objid']}_{band}.fits", overwrite=True
        )
        if band == "g" and stars:
            # The same cutout without its stars (same noise draws), for judging star removal.
            starfree = images.add_noise(clean, band, noise_seed, sky_sigma)
            fits.PrimaryHDU(starfree.astype(np.float32), header=header).writeto(
                starfree_dir(out_dir) / f"{p['objid']}_g.fits", overwrite=True
            )
    wcs = WCS(image_header(p, "g"))
    out = []
    for star in stars:
        ra, dec = wcs.pixel_to_world_values(star.x, star.y)
        out.append((float(ra), float(dec), round(star.mag_g, 3)))
    return out


def _one_thread_per_worker() -> None:
    """Pool initializer: a rendering process runs GalSim's OpenMP and numpy's BLAS on one
    thread. With a process per core their threads contend with the other processes' (on 2
    cores, 0.081 s a galaxy instead of 0.056 for a 200-galaxy survey)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def starfree_dir(out_dir: str | Path) -> Path:
    """Where the star-free g cutouts of a bundle live: beside the bundle, not in it.

    Only cutouts that have stars are written there; for the others the bundle's own
    cutout is already star-free.
    """
    out = Path(out_dir)
    return out.parent / f"{out.name}.starfree"


def simulate_survey(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 1,
    workers: int = 1,
    with_faults: bool = False,
    progress: Callable[[int, int], None] | None = None,
    instrument: Instrument | None = None,
) -> SimulationSummary:
    """Write a synthetic survey bundle of ``n`` galaxies to ``out_dir``; deterministic for a seed.

    ``instrument`` (default SDSS's) sets the seeing, pixel scale and sky noise: the same seed
    with another instrument gives the same galaxies seen through another telescope.
    """
    instrument = instrument or Instrument()
    started = time.perf_counter()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    starfree_dir(out).mkdir(parents=True, exist_ok=True)
    pop = draw_population(n, seed, instrument)
    rows = [pop.row(i) for i in range(len(pop))]
    jobs = [(r, str(out)) for r in rows]
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_one_thread_per_worker) as pool:
            stars = []
            for i, result in enumerate(pool.imap(render_and_write, jobs, chunksize=4), 1):
                stars.append(result)
                if progress:
                    progress(i, n)
    else:
        stars = []
        for i, job in enumerate(jobs, 1):
            stars.append(render_and_write(job))
            if progress:
                progress(i, n)
    rng = np.random.default_rng([seed, 2])
    faults = inject_faults(out, rows, rng) if with_faults else {}
    write_tables(out, pop, rows, stars, rng, faults)
    summary = SimulationSummary(str(out), n, seed, time.perf_counter() - started, instrument=instrument.describe())
    summary.faults = {kind: sum(1 for f in faults.values() if f == kind) for kind in FAULT_KINDS} if faults else {}
    ok = pop["chi2_r"] < 5
    summary.stats = {
        "median_z": float(np.median(pop["z"])),
        "median_kpc_per_pixel": float(np.median(pop["kpc_per_pixel"])),
        "min_kpc_per_pixel": float(np.min(pop["kpc_per_pixel"])),
        "max_kpc_per_pixel": float(np.max(pop["kpc_per_pixel"])),
        "ml_min": float(np.min(pop["ml_g"][ok])),
        "ml_median": float(np.median(pop["ml_g"][ok])),
        "ml_max": float(np.max(pop["ml_g"][ok])),
        "fraction_chi2_ge_5": float(np.mean(~ok)),
        "median_image_px": float(np.median(pop["size_px"])),
    }
    return summary


def inject_faults(out: Path, rows: list[dict], rng: np.random.Generator) -> dict[int, str]:
    """Damage one galaxy per fault kind (needs at least len(FAULT_KINDS) + 1 galaxies).

    Returns objid -> fault kind. Image faults are applied to the files now; catalogue
    faults are applied by :func:`write_tables` when it writes the rows.
    """
    if len(rows) <= len(FAULT_KINDS):
        raise ValueError(f"--with-faults needs more than {len(FAULT_KINDS)} galaxies, got {len(rows)}")
    victims = rng.choice(len(rows), size=len(FAULT_KINDS), replace=False)
    faults = {int(rows[i]["objid"]): kind for i, kind in zip(victims, FAULT_KINDS, strict=True)}
    for objid, kind in faults.items():
        path = out / "images" / f"{objid}_g.fits"
        if kind == "corrupt_fits":
            path.write_bytes(b"SIMPLE  = this is not a FITS file" + bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
        elif kind == "missing_fits":
            path.unlink()
        elif kind == "nan_image":
            with fits.open(path, mode="update") as hdul:
                hdul[0].data[:] = np.nan
        elif kind == "blank_image":  # a valid FITS file with nothing in it
            with fits.open(path, mode="update") as hdul:
                hdul[0].data[:] = 0.0
        elif kind == "missing_wcs":
            with fits.open(path) as hdul:
                header = hdul[0].header
                data = hdul[0].data
                for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2"):
                    header.remove(key, ignore_missing=True)
                fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return faults


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.10g}"
    return str(value)


def write_tables(out: Path, pop: Population, rows: list[dict], stars, rng, faults: dict[int, str]) -> None:
    """catalogue.csv, gswlc.dat, gz2.csv, stars.csv and truth.csv."""
    with open(out / "catalogue.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CATALOGUE_COLUMNS)
        for r in rows:
            values = {c: _fmt(r[c]) for c in CATALOGUE_COLUMNS}
            fault = faults.get(int(r["objid"]))
            if fault == "missing_redshift":
                values["z"] = ""
            elif fault == "negative_redshift":
                values["z"] = "-0.02"
            elif fault == "nonpositive_error":
                values["magerr_g"] = "0"
            elif fault == "unparseable_number":
                values["mag_g"] = "16.2.1"
            writer.writerow([values[c] for c in CATALOGUE_COLUMNS])
            if fault == "duplicate_objid":
                values["z"] = _fmt(r["z"] * 1.1)
                writer.writerow([values[c] for c in CATALOGUE_COLUMNS])

    # GSWLC-2: stellar mass consistent with the target M/L and the catalogue g magnitude.
    from pipeline.images.photometry import luminosity_distance_mpc, luminosity_lsun

    lum_g = luminosity_lsun(pop["mag_g"], luminosity_distance_mpc(pop["z"]), "g")
    log_mstar = np.log10(pop["ml_g"] * lum_g)
    rel = pop["ml_g_err"] / pop["ml_g"]
    log_mstar_err = np.sqrt(np.maximum(rel**2 - (0.4 * LN10 * pop["magerr_g"]) ** 2, (0.01 * LN10) ** 2)) / LN10
    with open(out / "gswlc.dat", "w") as fh:
        for i, r in enumerate(rows):
            values = dict.fromkeys(GSWLC_COLUMNS, GSWLC_MISSING)
            values.update(
                objid=r["objid"],
                glxid=i + 1,
                plate=266 + i % 500,
                mjd=51630,
                fiber_id=1 + i % 640,
                ra=r["ra"],
                dec=r["dec"],
                z=r["z"],
                chi2_r=r["chi2_r"],
                log_mstar=log_mstar[i],
                log_mstar_err=log_mstar_err[i],
                flag_sed=0,
                uv_survey=2,
                flag_uv=1,
                flag_midir=1,
                flag_mgs=1,
            )
            fh.write(" ".join(_fmt(values[c]) for c in GSWLC_COLUMNS) + "\n")

    with open(out / "gz2.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["dr8objid", *gz2.WEIGHTED_FRACTION_COLUMNS])
        for r in rows:
            if rng.random() < GZ2_COVERAGE:
                fractions = simulate_votes(r, rng)
                writer.writerow([r["objid"], *("" if np.isnan(f) else f"{f:.4f}" for f in fractions)])

    with open(out / "stars.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ra", "dec", "mag_g"])
        for galaxy_stars in stars:
            for ra, dec, mag in galaxy_stars:
                writer.writerow([f"{ra:.7f}", f"{dec:.7f}", mag])

    with open(out / "truth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TRUTH_COLUMNS)
        for r, galaxy_stars in zip(rows, stars, strict=True):
            extra = {"n_stars": len(galaxy_stars), "fault": faults.get(int(r["objid"]), "")}
            writer.writerow([_fmt(extra[c] if c in extra else r[c]) for c in TRUTH_COLUMNS])
