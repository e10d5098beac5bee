"""One galaxy from an uploaded cutout to the GBM's inputs, by the same functions the stages use.

The preprocess stage, the features stage and the learning data do this for a whole survey
through the database; here it happens in memory for one galaxy, with no row written. The
images reach the networks as the image store hands them over (float16, read back as
float32), so a galaxy uploaded again gets the features its catalogue row has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.images.photometry import cosmology, luminosity_distance_mpc, pixel_size_kpc
from pipeline.images.preprocess import ImageMeta, PreprocessedImage, StarRemoval, preprocess, remove_stars
from pipeline.learning.data import BANDS, LearningData, assemble

#: The dtype of the image store: the networks read their inputs at this precision.
STORED_DTYPE = np.float16


@dataclass
class PreparedGalaxy:
    """An uploaded galaxy after star removal and preprocessing, with its distances."""

    removal: StarRemoval
    preprocessed: PreprocessedImage
    redshift: float
    lum_dist_mpc: float
    pixel_kpc: float

    def network_input(self, size: int) -> np.ndarray:
        """The (1, size, size) float32 log image a network of that input size reads."""
        return self.preprocessed.resized[size].astype(STORED_DTYPE).astype(np.float32)[None]


def prepare_galaxy(
    pixels_nmgy: np.ndarray,
    pixscale_arcsec: float,
    psf_fwhm_arcsec: float,
    redshift: float,
    resolutions: tuple[int, ...],
    *,
    h0: float = 70.0,
    om0: float = 0.3,
    seed: int = 0,
) -> PreparedGalaxy:
    """Star removal (blind detection: an upload has no star catalogue) and preprocessing.

    Raises
    ------
    ValueError, NoScalingValue
        for a blank or noise-dominated image or a redshift that is not positive.
    """
    if not np.isfinite(redshift) or redshift <= 0:
        raise ValueError(f"z must be a positive redshift, got {redshift:g}")
    cosmo = cosmology(h0, om0)
    lum_dist = float(np.atleast_1d(luminosity_distance_mpc(np.array([redshift]), cosmo))[0])
    pixel_kpc = float(np.atleast_1d(pixel_size_kpc(np.array([pixscale_arcsec]), np.array([redshift]), cosmo))[0])
    removal = remove_stars(np.asarray(pixels_nmgy, dtype=np.float64), psf_fwhm_arcsec / pixscale_arcsec, None, seed)
    meta = ImageMeta(redshift=redshift, lum_dist_mpc=lum_dist, pixel_kpc=pixel_kpc)
    result = preprocess(removal.cleaned, meta, tuple(resolutions), n_stars_removed=len(removal.stars))
    return PreparedGalaxy(removal, result, float(redshift), lum_dist, pixel_kpc)


def galaxy_learning_data(
    galaxy: PreparedGalaxy,
    magnitudes: dict[str, float | None],
    magerr_g: float | None,
    cnn_groups: dict[str, tuple[np.ndarray, list[str]]],
    cnn1_probabilities: np.ndarray,
) -> LearningData:
    """The one-row :class:`LearningData` of the galaxy (no target, no split), as the survey's would be."""

    def one(value: float | None) -> np.ndarray:
        return np.array([np.nan if value is None else float(value)])

    features = {
        name: np.array([np.nan if value is None else value], dtype=float) for name, value in galaxy.preprocessed.features.items()
    }
    return assemble(
        galaxy_ids=np.array([0]),
        split=np.array([""], dtype=object),
        target=one(None),
        error=one(None),
        redshift=one(galaxy.redshift),
        lum_dist_mpc=one(galaxy.lum_dist_mpc),
        magnitudes={b: one(magnitudes.get(b)) for b in BANDS},
        image_features=features,
        cnn_groups=cnn_groups,
        cnn1_probabilities=np.asarray(cnn1_probabilities, dtype=float).reshape(1, -1),
        magerr_g=one(magerr_g),
    )
