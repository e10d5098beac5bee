"""Load a survey's GBM inputs (:class:`pipeline.learning.data.LearningData`) from the database.

Every galaxy that is not rejected is loaded (the catalogue predicts for all of them); only
the learning sample keeps its train/val/test split. CNN features come from one features
run (by default the survey's latest that succeeded), so a model and its predictions
always read the same feature-set versions.
"""

from __future__ import annotations

import numpy as np

from catalogue.models import FeatureSet, Galaxy, GalaxyStatus, Preprocessed, Survey
from catalogue.selectors import feature_matrix, latest_feature_sets
from pipeline.learning.data import LearningData, assemble
from pipeline.presets import CNN_GROUP_SETS

PROBABILITY_SET = "cnn1.gz2"


def load_learning_data(survey: Survey, feature_set_ids: dict[str, int] | None = None) -> tuple[LearningData, dict[str, int]]:
    """The survey's :class:`LearningData` and the ids of the feature sets it read, by name."""
    if feature_set_ids:
        sets = {fs.name: fs for fs in FeatureSet.objects.filter(pk__in=feature_set_ids.values())}
        if len(sets) != len(feature_set_ids):
            raise ValueError("a feature set this model was trained on has been deleted; train the model again")
    else:
        sets = latest_feature_sets(survey)
    fields = [
        "id",
        "split",
        "status",
        "ml_g",
        "ml_g_err",
        "z",
        "lum_dist_mpc",
        "mag_u",
        "mag_g",
        "mag_r",
        "mag_i",
        "mag_z",
        "magerr_g",
    ]
    rows = list(Galaxy.objects.filter(survey=survey).exclude(status=GalaxyStatus.REJECTED).order_by("id").values_list(*fields))
    if not rows:
        raise ValueError(f"survey {survey.name} has no galaxies to learn from or predict")
    columns = {name: np.array([r[i] for r in rows], dtype=object) for i, name in enumerate(fields)}
    ids = columns["id"].astype(np.int64)

    def floats(name: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in columns[name]], dtype=float)

    split = np.where(columns["status"] == GalaxyStatus.OK, columns["split"], "").astype(object)
    image_features = _image_features(survey, ids)
    cnn_groups = {
        group: feature_matrix([sets[n] for n in names], ids)
        for group, names in CNN_GROUP_SETS.items()
        if all(n in sets for n in names)  # an optional group (CNN4 on colour) only where it was made
    }
    probabilities, _ = feature_matrix([sets[PROBABILITY_SET]], ids, drop=False)
    data = assemble(
        galaxy_ids=ids,
        split=split,
        target=floats("ml_g"),
        error=floats("ml_g_err"),
        redshift=floats("z"),
        lum_dist_mpc=floats("lum_dist_mpc"),
        magnitudes={b: floats(f"mag_{b}") for b in "ugriz"},
        image_features=image_features,
        cnn_groups=cnn_groups,
        cnn1_probabilities=probabilities,
        magerr_g=floats("magerr_g"),
    )
    return data, {name: fs.pk for name, fs in sets.items()}


def _image_features(survey: Survey, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Preprocessing's luminosity, log-image and metadata features as columns (NaN where failed)."""
    position = {int(g): i for i, g in enumerate(ids)}
    found = Preprocessed.objects.filter(galaxy__survey=survey, status=Preprocessed.Status.OK).values_list("galaxy_id", "features")
    columns: dict[str, np.ndarray] = {}
    for galaxy_id, features in found.iterator(chunk_size=5000):
        at = position.get(galaxy_id)
        if at is None:
            continue
        for name, value in features.items():
            if name not in columns:
                columns[name] = np.full(len(ids), np.nan)
            columns[name][at] = np.nan if value is None else value
    return columns
