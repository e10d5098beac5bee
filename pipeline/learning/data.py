"""The GBM's inputs: named groups of feature columns for every galaxy of a survey.

The paper's second stage learns M/L from groups of features, and its experiments add or
remove whole groups (Table 1) or whole bands (Fig. 8). :class:`LearningData` holds every
column once, in one float32 matrix, with the groups as lists of column names:

* ``luminosity``: statistics of the star-subtracted g image in Lsun_g per pixel (sum,
  mean, max, min, std, central pixel, central 5 x 5 mean);
* ``flux``: the same statistics in nanomaggies, which replace ``luminosity`` when the
  distance is left out (luminosity = flux x 4 pi D_L^2 carries the distance);
* ``image``: distance-free statistics: the log image's (sum, mean, std, centre, centre
  5 x 5), the cutout size in pixels and the scaling value of Eq. 1;
* ``distance``: redshift and pixel size in kpc;
* ``cnn123``: CNN1-3's GZ2 probabilities and CNN1's pooled activations; ``cnn4``: CNN4's
  37 next-to-last activations; ``cnn4gi``: those of CNN4 on colour (g image and g - i map), where
  the survey has them (an optional group: :meth:`LearningData.covered`);
* ``band_<b>``: the catalogue luminosity in band b (Lsun in that band), from the
  extinction-corrected model magnitude and the luminosity distance;
* ``magnitudes``: mag_g and mag_i (AB), the input of the g - i power law.

Band sets (Fig. 8) are built as redshift, the luminosity in each band and each band's
luminosity relative to g (a colour): for g and i that is exactly the paper's g + i model
on z, Lg, Li and Lg/Li, and for g alone it is the Lg + z model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.images.photometry import luminosity_lsun, nanomaggies_to_lsun
from pipeline.presets import OPTIONAL_GROUPS

LUMINOSITY = ("lum_sum", "lum_mean", "lum_max", "lum_min", "lum_std", "lum_center", "lum_center5")
IMAGE = ("log_sum", "log_mean", "log_std", "log_center", "log_center5", "image_size", "scaling_value")
DISTANCE = ("redshift", "pixel_kpc")
BANDS = ("u", "g", "r", "i", "z")
#: Fig. 8's band sets.
BAND_SETS = ("g", "gi", "gri", "griz", "ugriz")
#: The groups of the paper's main model (the g image and its redshift).
MORPHOLOGY_MODEL_GROUPS = ("luminosity", "image", "distance", "cnn123", "cnn4")
#: gi_images' groups: the morphology model's with CNN4 on colour in place of CNN4 on g.
COLOUR_IMAGE_MODEL_GROUPS = ("luminosity", "image", "distance", "cnn123", "cnn4gi")


def flux_name(luminosity_name: str) -> str:
    return "flux" + luminosity_name.removeprefix("lum")


@dataclass
class LearningData:
    """Every galaxy's feature columns, split, target and morphology class.

    ``target`` and ``error`` (Msun/Lsun_g) are NaN for galaxies without an M/L target;
    ``split`` is '' outside the learning sample; ``morphology`` is the paper's class from
    CNN1's probabilities ('' where CNN1 gave none); ``lum_g`` (Lsun_g) turns M/L into mass.
    """

    galaxy_ids: np.ndarray
    split: np.ndarray
    target: np.ndarray
    error: np.ndarray
    lum_g: np.ndarray
    columns: np.ndarray
    names: list[str]
    groups: dict[str, list[str]]
    morphology: np.ndarray
    magerr_g: np.ndarray | None = None
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.names)}
        if self.columns.shape != (len(self.galaxy_ids), len(self.names)):
            shape, n = self.columns.shape, len(self.galaxy_ids)
            raise ValueError(f"columns of shape {shape} for {n} galaxies x {len(self.names)} names")

    def feature_names(self, groups: tuple[str, ...] = (), bands: str = "") -> list[str]:
        """Column names of the groups and of a band set, each once, in a fixed order."""
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ValueError(f"no feature group {', '.join(unknown)}; have {', '.join(self.groups)}")
        names = [n for g in groups for n in self.groups[g]]
        names += band_set_names(bands) if bands else []
        return list(dict.fromkeys(names))

    def matrix(self, names: list[str], rows: np.ndarray | None = None) -> np.ndarray:
        """The float32 matrix of the named columns (for ``rows``, default all galaxies)."""
        missing = [n for n in names if n not in self.index]
        if missing:
            raise ValueError(f"no feature column {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        columns = [self.index[n] for n in names]
        data = self.columns if rows is None else self.columns[rows]
        return np.ascontiguousarray(data[:, columns])

    def physical(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Redshift, g-band luminosity (Lsun_g) and size (the cutout's field in kpc, which follows D25)."""
        rows = slice(None) if rows is None else rows
        columns = self.columns[rows]
        size = columns[:, self.index["image_size"]].astype(float) * columns[:, self.index["pixel_kpc"]].astype(float)
        return {"redshift": columns[:, self.index["redshift"]].astype(float), "luminosity": self.lum_g[rows], "size_kpc": size}

    def covered(self, groups: tuple[str, ...], rows: np.ndarray | None = None) -> np.ndarray:
        """Per galaxy (of ``rows``, default all): whether it has every optional group among
        ``groups`` (CNN4 on colour's features need an i image). A model reading an optional
        group learns from and predicts only these galaxies: a galaxy without its i image gets
        the g models' predictions, not a guess for 37 missing values."""
        n = len(self.galaxy_ids) if rows is None else len(rows)
        present = np.ones(n, dtype=bool)
        for group in groups:
            if group in OPTIONAL_GROUPS:
                if group not in self.groups:  # the survey has none of them
                    return np.zeros(n, dtype=bool)
                columns = self.matrix(self.groups[group], rows)
                present &= np.isfinite(columns).any(axis=1) if columns.shape[1] else False
        return present

    def rows(self, split: str) -> np.ndarray:
        """Indices of the galaxies of a split that have a usable M/L target and error."""
        usable = np.isfinite(self.target) & (self.target > 0) & np.isfinite(self.error)
        return np.flatnonzero((self.split == split) & usable)


def catalogue_input(feature: str) -> str | None:
    """The catalogue column a feature is computed from (``L_i``, ``L_g/L_i``, ``mag_i`` -> ``mag_i``), if any."""
    for band in BANDS:
        if feature in (f"L_{band}", f"L_g/L_{band}", f"mag_{band}"):
            return f"mag_{band}" if feature != "L_g/L_g" else None
    return None


def absent_inputs(data: LearningData, features: list[str]) -> list[str]:
    """Catalogue columns that ``features`` need and that no galaxy of ``data`` has.

    A survey without ``mag_i`` cannot be predicted by a model that reads L_i: its
    predictions would be the model's guess for a missing value, not an M/L. Missing for
    some galaxies only is the usual missing value, which the GBMs handle.
    """
    absent: list[str] = []
    for feature in features:
        column = catalogue_input(feature)
        if column is None or column in absent or feature not in data.index:
            continue
        if not np.isfinite(data.columns[:, data.index[feature]]).any():
            absent.append(column)
    return absent


def band_set_names(bands: str) -> list[str]:
    """redshift, L_b for each band and L_g / L_b for the others (a colour)."""
    if not bands or any(b not in BANDS for b in bands) or "g" not in bands:
        raise ValueError(f"band set {bands!r}: bands from {''.join(BANDS)}, always with g")
    return ["redshift", *(f"L_{b}" for b in bands), *(f"L_g/L_{b}" for b in bands if b != "g")]


def assemble(
    *,
    galaxy_ids: np.ndarray,
    split: np.ndarray,
    target: np.ndarray,
    error: np.ndarray,
    redshift: np.ndarray,
    lum_dist_mpc: np.ndarray,
    magnitudes: dict[str, np.ndarray],
    image_features: dict[str, np.ndarray],
    cnn_groups: dict[str, tuple[np.ndarray, list[str]]],
    cnn1_probabilities: np.ndarray | None,
    magerr_g: np.ndarray | None = None,
) -> LearningData:
    """Build :class:`LearningData` from per-galaxy arrays (NaN where a value is missing).

    ``image_features`` maps the preprocessing feature names (:data:`LUMINOSITY`,
    :data:`IMAGE`, ``pixel_kpc``) to arrays; ``cnn_groups`` maps ``cnn123``, ``cnn4`` (and
    ``cnn4gi`` where made) to (matrix, column names); ``cnn1_probabilities`` is CNN1's
    (N, 37) GZ2 output.
    """
    from pipeline.learning.metrics import morphology_class

    n = len(galaxy_ids)
    lum_dist_mpc = np.asarray(lum_dist_mpc, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_nmgy = nanomaggies_to_lsun(1.0, lum_dist_mpc, "g")
        band_lum = {b: luminosity_lsun(np.asarray(magnitudes[b], dtype=float), lum_dist_mpc, b) for b in BANDS}
    blocks: list[np.ndarray] = []
    names: list[str] = []
    groups: dict[str, list[str]] = {}

    def add(group: str, columns: dict[str, np.ndarray]) -> None:
        groups[group] = list(columns)
        names.extend(columns)
        blocks.extend(np.asarray(v, dtype=np.float32).reshape(n, 1) for v in columns.values())

    def image(name: str) -> np.ndarray:
        return np.asarray(image_features.get(name, np.full(n, np.nan)), dtype=float)

    add("luminosity", {name: image(name) for name in LUMINOSITY})
    with np.errstate(invalid="ignore", divide="ignore"):
        add("flux", {flux_name(name): image(name) / per_nmgy for name in LUMINOSITY})
        colours = {f"L_g/L_{b}": band_lum["g"] / band_lum[b] for b in BANDS if b != "g"}
    add("image", {name: image(name) for name in IMAGE})
    add("distance", {"redshift": np.asarray(redshift, dtype=float), "pixel_kpc": image("pixel_kpc")})
    for band in BANDS:
        add(f"band_{band}", {f"L_{band}": band_lum[band]})
    add("colours", colours)
    add("magnitudes", {"mag_g": magnitudes["g"], "mag_i": magnitudes["i"]})
    for group, (matrix, column_names) in cnn_groups.items():
        matrix = np.asarray(matrix, dtype=np.float32)
        groups[group] = list(column_names)
        names.extend(column_names)
        blocks.append(matrix.reshape(n, len(column_names)))
    columns = np.hstack(blocks) if blocks else np.empty((n, 0), np.float32)
    morphology = np.full(n, "", dtype=object)
    if cnn1_probabilities is not None:
        probabilities = np.asarray(cnn1_probabilities, dtype=float)
        known = np.isfinite(probabilities).all(axis=1)
        if known.any():
            morphology[known] = morphology_class(probabilities[known])
    return LearningData(
        galaxy_ids=np.asarray(galaxy_ids, dtype=np.int64),
        split=np.asarray(split, dtype=object),
        target=np.asarray(target, dtype=float),
        error=np.asarray(error, dtype=float),
        lum_g=band_lum["g"],
        columns=columns,
        names=names,
        groups=groups,
        morphology=morphology,
        magerr_g=None if magerr_g is None else np.asarray(magerr_g, dtype=float),
    )
