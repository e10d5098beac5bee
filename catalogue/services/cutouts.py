"""Read stored FITS cutouts through Django's storage API."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from catalogue.models import Galaxy, Image


def read_cutout(image: Image) -> tuple[fits.Header, np.ndarray]:
    """Header and float64 pixels of a stored cutout (primary HDU)."""
    with image.file.open("rb") as fh, fits.open(io.BytesIO(fh.read())) as hdul:
        return hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)


def usable_image(galaxy: Galaxy, band: str = "g") -> Image | None:
    """The galaxy's accepted cutout in ``band`` (uses prefetched images when present)."""
    return next((i for i in galaxy.images.all() if i.band == band and i.status == Image.Status.OK), None)
