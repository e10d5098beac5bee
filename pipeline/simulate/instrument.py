"""The instrument a synthetic survey is observed with: seeing, pixel scale and sky noise.

The default is the SDSS-like survey the paper used (0.396" pixels, a median g-band PSF FWHM
of 1.4", a deep-mosaic sky). Another instrument (DESI Legacy's 0.262" pixels, a wider PSF, a
shallower sky) is what a model set meets when it is applied to a survey it was not trained
on; :func:`observe` gives a drawn population that instrument without changing any random
draw, so the same seed gives the same galaxies seen through another telescope.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: SDSS: pixel scale (arcsec) and the median g-band PSF FWHM (arcsec) the population draws around.
SDSS_PIXEL_SCALE_ARCSEC = 0.396
SDSS_MEDIAN_PSF_FWHM_ARCSEC = 1.4


@dataclass(frozen=True)
class Instrument:
    """How the galaxies are observed.

    Attributes
    ----------
    pixel_scale_arcsec : float
        arcsec per pixel; cutouts keep their field of view (more pixels at a finer scale).
    psf_fwhm_arcsec : float
        median g-band PSF FWHM in arcsec; each galaxy keeps its own seeing around it (the
        same spread as SDSS's), and i is 5-15% sharper as before.
    sky_noise : float
        the sky's noise as a multiple of the SDSS deep mosaic's, per unit area: a pixel's
        noise also grows with its side, so finer pixels are noisier each.
    """

    pixel_scale_arcsec: float = SDSS_PIXEL_SCALE_ARCSEC
    psf_fwhm_arcsec: float = SDSS_MEDIAN_PSF_FWHM_ARCSEC
    sky_noise: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "pixel scale": (self.pixel_scale_arcsec, 0.05, 2.0, "arcsec"),
            "PSF FWHM": (self.psf_fwhm_arcsec, 0.3, 5.0, "arcsec"),
            "sky noise": (self.sky_noise, 0.1, 20.0, "x SDSS"),
        }
        for name, (value, lo, hi, unit) in checks.items():
            if not (np.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} {value:g} {unit} is outside {lo:g}-{hi:g} {unit}")

    @property
    def is_sdss(self) -> bool:
        return self == Instrument()

    def describe(self) -> dict:
        """The instrument as JSON-ready numbers with their units in the names."""
        return asdict(self)


def observe(columns: dict[str, np.ndarray], instrument: Instrument, max_image_px: int, fov_per_d25: float) -> None:
    """Give a drawn population's columns this instrument's seeing, pixels and sky (in place).

    The population was drawn for SDSS; only what the instrument decides changes: each
    galaxy's PSF FWHM scales with the instrument's median, and its pixel size in kpc and
    cutout size in pixels follow the pixel scale. ``pixscale_arcsec`` and ``sky_noise``
    columns tell the renderer the rest.
    """
    n = len(columns["z"])
    psf_factor = instrument.psf_fwhm_arcsec / SDSS_MEDIAN_PSF_FWHM_ARCSEC
    columns["psf_fwhm_g"] = columns["psf_fwhm_g"] * psf_factor
    columns["psf_fwhm_i"] = columns["psf_fwhm_i"] * psf_factor
    pixel_factor = instrument.pixel_scale_arcsec / SDSS_PIXEL_SCALE_ARCSEC
    columns["kpc_per_pixel"] = columns["kpc_per_pixel"] * pixel_factor
    size_px = np.ceil(fov_per_d25 * columns["d25_arcmin"] * 60 / instrument.pixel_scale_arcsec).astype(int)
    columns["size_px"] = np.clip(size_px + (size_px % 2 == 0), 31, max_image_px + 1)
    columns["pixscale_arcsec"] = np.full(n, instrument.pixel_scale_arcsec)
    columns["sky_noise"] = np.full(n, instrument.sky_noise)
