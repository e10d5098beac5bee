"""Read stored FITS cutouts through Django's storage API, and what preprocessing takes from them."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from catalogue.models import Galaxy, Image
from pipeline.images.stars import prior_pixels


def read_cutout(image: Image) -> tuple[fits.Header, np.ndarray]:
    """Header and float64 pixels of a stored cutout (primary HDU)."""
    with image.file.open("rb") as fh, fits.open(io.BytesIO(fh.read())) as hdul:
        return hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)


def usable_image(galaxy: Galaxy, band: str = "g") -> Image | None:
    """The galaxy's accepted cutout in ``band`` (uses prefetched images when present)."""
    return next((i for i in galaxy.images.all() if i.band == band and i.status == Image.Status.OK), None)


@dataclass(frozen=True)
class PreprocessingInput:
    """What star removal and preprocessing take from a galaxy: pixels, PSF, catalogue stars, seed."""

    data: np.ndarray
    psf_fwhm_px: float
    prior_xy: np.ndarray | None  # catalogue stars in the cutout's pixels; None: detect them blindly
    seed: int


def cutout_for_preprocessing(galaxy: Galaxy, band: str = "g") -> PreprocessingInput:
    """The galaxy's cutout in ``band`` with its PSF in pixels, its catalogue stars (g only:
    other bands take the stars found in g) and its seed (from the objid).

    Raises
    ------
    ValueError
        when the galaxy has no usable image in that band.
    """
    image = usable_image(galaxy, band)
    if image is None:
        raise ValueError(f"no usable {band}-band image")
    header, data = read_cutout(image)
    with_catalogue = band == "g" and galaxy.survey.has_star_catalogue
    prior = prior_pixels(header, galaxy.extra.get("stars", [])) if with_catalogue else None
    return PreprocessingInput(data, image.psf_fwhm_arcsec / image.pixscale_arcsec, prior, galaxy.objid % (2**32))
