"""M/L for one uploaded galaxy: a g-band cutout, z and mag_g through a model set, nothing stored.

``POST /api/predict/`` and the ``/predict/`` page call :func:`predict_upload`. The cutout is
checked against the bundle format (the same checks as an ingest), preprocessed at the
set's resolutions, passed through the set's networks (loaded once per process and kept)
and its features through every named model of the set, as the predict stage does for a
survey. A model whose catalogue inputs were not given (no ``mag_i``) is skipped with the
reason.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from catalogue.columns import INTERVAL_COLUMNS
from catalogue.models import FeatureSet, ModelSet
from catalogue.selectors import named_models, set_networks
from catalogue.services.artifacts import load_keras_model, load_pickle
from catalogue.services.learning_data import PROBABILITY_SET
from pipeline.bundles.reader import BadImage, inspect_image
from pipeline.images.single_galaxy import PreparedGalaxy, galaxy_learning_data, prepare_galaxy
from pipeline.learning.data import absent_inputs
from pipeline.presets import CNN_GROUP_SETS, FEATURE_LAYERS

#: Largest upload accepted (a 1,000 x 1,000 float64 cutout is 8 MB).
MAX_UPLOAD_BYTES = 16 * 1024 * 1024


class UploadError(ValueError):
    """An upload that cannot be predicted; the message names the field and what is wrong."""


@dataclass
class Upload:
    """What a user sends: the g cutout's bytes and the catalogue values."""

    fits_bytes: bytes
    z: float
    mag_g: float
    magerr_g: float | None = None
    mag_i: float | None = None
    objid: int | None = None


@dataclass
class UploadResult:
    """Per named model its prediction or why it was skipped, and what preprocessing did."""

    model_set: ModelSet
    galaxy: PreparedGalaxy
    predictions: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        pre = self.galaxy.preprocessed
        return {
            "model_set": self.model_set.name,
            "preprocessing": {
                "stars_removed": pre.n_stars_removed,
                "scaling_value": pre.scaling_value,
                # too shallow for the target noise level: the closest scaling value was used
                "scaling_fallback": pre.scaling_fallback,
                "noise_level": pre.noise_level,
                "image_px": list(self.galaxy.removal.square.shape),
                "lum_dist_mpc": self.galaxy.lum_dist_mpc,
                "pixel_kpc": self.galaxy.pixel_kpc,
            },
            "predictions": self.predictions,
            "skipped": self.skipped,
            "units": {
                "ml": "solMass/solLum (g band)",
                "mstar": "solMass",
                "lum_dist_mpc": "Mpc",
                "pixel_kpc": "kpc",
                "image_px": "pixels",
                "scaling_value": "dimensionless a of Eq. 1",
            },
        }


def read_upload(fits_bytes: bytes) -> tuple[np.ndarray, float, float]:
    """The cutout's float64 pixels, pixel scale and PSF FWHM (arcsec), checked as an ingest checks it.

    Raises
    ------
    UploadError
        for a file that is too large, not FITS, not a g-band cutout in the bundle format.
    """
    if not fits_bytes:
        raise UploadError("image: no file was uploaded")
    if len(fits_bytes) > MAX_UPLOAD_BYTES:
        raise UploadError(f"image: {len(fits_bytes)} bytes; at most {MAX_UPLOAD_BYTES} accepted")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload_g.fits"
        path.write_bytes(fits_bytes)
        try:
            info = inspect_image(path)
        except BadImage as exc:
            raise UploadError(f"image: {str(exc).replace('upload_g.fits', 'the file')}") from None
    if info.band != "g":
        raise UploadError(f"image: BAND = {info.band!r} in its header; a g-band cutout is needed")
    with fits.open(io.BytesIO(fits_bytes)) as hdul:
        pixels = np.asarray(hdul[0].data, dtype=np.float64)
    return pixels, info.pixscale_arcsec, info.psf_fwhm_arcsec


def predict_upload(upload: Upload, model_set: ModelSet) -> UploadResult:
    """Every named model of ``model_set`` on the uploaded galaxy.

    Raises
    ------
    UploadError
        for a bad file or values, or an image preprocessing cannot use (blank, noise only).
    """
    pixels, pixscale, psf = read_upload(upload.fits_bytes)
    seed = (upload.objid or 0) % (2**32)
    try:
        galaxy = prepare_galaxy(
            pixels,
            pixscale,
            psf,
            float(upload.z),
            tuple(model_set.resolutions),
            h0=model_set.survey.h0,
            om0=model_set.survey.om0,
            seed=seed,
        )
    except ValueError as exc:
        raise UploadError(f"image: preprocessing failed: {exc}") from exc
    cnn_groups, probabilities = feature_groups(network_activations(galaxy, model_set), model_set)
    magnitudes = {"g": upload.mag_g, "i": upload.mag_i}
    data = galaxy_learning_data(galaxy, magnitudes, upload.magerr_g, cnn_groups, probabilities)
    result = UploadResult(model_set, galaxy)
    for name, model in sorted(named_models(model_set).items()):
        fitted = load_pickle(model.artifact.name)
        lacking = absent_inputs(data, fitted.features)
        if lacking:
            result.skipped[name] = f"needs {', '.join(lacking)}, which was not given"
            continue
        if not data.covered(fitted.spec.groups)[0]:
            result.skipped[name] = "needs an i-band image (CNN4 on colour); an upload is a g cutout"
            continue
        u = fitted.uncertainty(data)
        ml = float(u["ml"][0])
        if not (np.isfinite(ml) and ml > 0):
            result.skipped[name] = "the model gave no positive M/L for these inputs"
            continue
        entry = {"ml": ml, "mstar": _number(u["mstar"][0])}
        entry.update({c: _number(u[c][0]) for c in INTERVAL_COLUMNS})
        entry["out_of_selection"] = bool(u["reasons"][0])
        entry["reasons"] = list(u["reasons"][0])
        result.predictions[name] = entry
    return result


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def network_activations(galaxy: PreparedGalaxy, model_set: ModelSet) -> dict[str, np.ndarray]:
    """The galaxy's activations of each feature set of ``model_set`` (``role.layer`` -> vector).

    Made as the features stage made the set's (the same layers, the same symmetries), but
    in a batch of one: the networks' float32 arithmetic then rounds differently in the last
    bits (about 1e-7), which can move a galaxy across a tree's split. The catalogue row and
    an upload of the same cutout agree to that rounding, not always bit for bit.
    """
    from pipeline.cnn.data import ImageBatches
    from pipeline.cnn.training import predict_layers

    trained_on = {fs.name: fs for fs in FeatureSet.objects.filter(pk__in=model_set.feature_sets.values())}
    activations: dict[str, np.ndarray] = {}
    for role, network in set_networks(model_set).items():
        if tuple(network.hyperparameters.get("channels", ("g",))) != ("g",):
            continue  # CNN4 on colour: an upload has no i image
        image = galaxy.network_input(int(network.hyperparameters["size"]))
        batches = ImageBatches(lambda rows, image=image: image[rows], np.array([0]), None, 1)
        layers = list(FEATURE_LAYERS[role])
        symmetries = trained_on[f"{role}.{layers[0]}"].symmetries  # as the set's models' features were made
        for layer, values in predict_layers(load_keras_model(network.artifact.name), layers, batches, symmetries).items():
            activations[f"{role}.{layer}"] = values[0]
    return activations


def feature_groups(activations: dict[str, np.ndarray], model_set: ModelSet) -> tuple[dict, np.ndarray]:
    """The GBM feature groups of one galaxy's activations, named and dropped as on the set's
    training survey, and CNN1's GZ2 probabilities (its morphology class). A set the galaxy
    has no activations of (CNN4 on colour for a g cutout) is NaN: its models skip the galaxy."""
    trained_on = {fs.name: fs for fs in FeatureSet.objects.filter(pk__in=model_set.feature_sets.values())}
    groups = {}
    for group, set_names in CNN_GROUP_SETS.items():
        if not all(name in trained_on for name in set_names):
            continue  # an optional group the set was trained without
        values, names = [], []
        for set_name in set_names:
            feature_set = trained_on[set_name]
            dropped = set(feature_set.dropped)
            keep = [i for i, n in enumerate(feature_set.feature_names) if n not in dropped]
            made = activations.get(set_name, np.full(len(feature_set.feature_names), np.nan, np.float32))
            values.append(np.asarray(made)[keep])
            names += [feature_set.feature_names[i] for i in keep]
        groups[group] = (np.concatenate(values).reshape(1, -1), names)
    return groups, activations[PROBABILITY_SET]
