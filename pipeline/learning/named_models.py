"""The named M/L models: what each learns from and how, named once.

Every full run stores the models of :data:`NAMED_MODELS` under these names: the paper's
baselines, its two morphology models and ``gi_images``, which reads CNN4 on colour's
features where the survey has i images (:func:`fittable`). Code that means one of them uses
the names below; :func:`required_inputs` says what each needs of a galaxy. Fitting them is
:mod:`pipeline.learning.regression`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.learning.data import COLOUR_IMAGE_MODEL_GROUPS, MORPHOLOGY_MODEL_GROUPS
from pipeline.presets import OPTIONAL_GROUPS

METHODS = ("constant", "gbm", "powerlaw")


@dataclass(frozen=True)
class ModelSpec:
    """What a model learns from and how: ``groups`` of :class:`LearningData` plus a band set."""

    name: str
    method: str
    groups: tuple[str, ...] = ()
    bands: str = ""
    loss: str = "l1"
    select_top: int = 0  # > 0: also try the top-k features by permutation importance

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

    def label(self) -> list[str]:
        """The feature groups, with the band set spelled out (for tables)."""
        return [*self.groups, *([f"bands:{self.bands}"] if self.bands else [])]


NAMED_MODELS = (
    ModelSpec("constant", "constant"),
    ModelSpec("lgz", "gbm", bands="g"),
    ModelSpec("powerlaw_gi", "powerlaw", groups=("magnitudes",)),
    ModelSpec("gi", "gbm", bands="gi"),
    ModelSpec("g_morph", "gbm", groups=MORPHOLOGY_MODEL_GROUPS, select_top=50),
    ModelSpec("gi_morph", "gbm", groups=MORPHOLOGY_MODEL_GROUPS, bands="gi", select_top=50),
    # beyond the paper: CNN4 on the g image and g - i map in place of CNN4 on g (fitted where the survey has them)
    ModelSpec("gi_images", "gbm", groups=COLOUR_IMAGE_MODEL_GROUPS, bands="gi", select_top=50),
)
NAMED = {spec.name: spec for spec in NAMED_MODELS}
NAMED_MODEL_NAMES = tuple(NAMED)
#: The named models by name, for code that means one of them (the experiments, the pages).
CONSTANT, LGZ, POWERLAW_GI, GI, G_MORPH, GI_MORPH, GI_IMAGES = NAMED_MODEL_NAMES
#: The paper's model, from the g image and redshift, which every galaxy with a g image has: what TAP's catalogue
#: view and the calibration figures show. The catalogue's M/L is chosen per galaxy (catalogue.selectors.catalogue_ml).
CATALOGUE_MODEL = G_MORPH
#: The named models every full run stores, whatever the survey's bands: those reading no optional group.
REQUIRED_MODEL_NAMES = tuple(spec.name for spec in NAMED_MODELS if not set(spec.groups) & set(OPTIONAL_GROUPS))


#: Groups read from the g image (its preprocessing features and the networks' features on it).
G_IMAGE_GROUPS = frozenset(MORPHOLOGY_MODEL_GROUPS) - {"distance"}


def required_inputs(spec: ModelSpec) -> frozenset[str]:
    """What a galaxy must have for ``spec``'s prediction of it to rest on its own data: ``mag_i`` (an i
    flux), ``g_image`` (a preprocessed g image) and ``i_image`` (the i and g - i channels). A GBM
    predicts from missing inputs too (as missing values), so the catalogue asks this, not whether a
    prediction exists, when it chooses a galaxy's model."""
    needs = set()
    if "i" in spec.bands or "magnitudes" in spec.groups:
        needs.add("mag_i")
    if G_IMAGE_GROUPS & set(spec.groups):
        needs.add("g_image")
    if set(OPTIONAL_GROUPS) & set(spec.groups):
        needs.add("i_image")
    return frozenset(needs)


def fittable(specs: Iterable[ModelSpec], absent_groups: Iterable[str]) -> list[ModelSpec]:
    """The specs that read none of ``absent_groups`` (a survey without i images has no
    CNN4-on-colour features, so ``gi_images`` is not fitted on it)."""
    return [spec for spec in specs if not set(spec.groups) & set(absent_groups)]
