"""Run presets: configuration as data, not branches in code.

``test`` is sized for CI (tiny images, networks and epochs: seconds), ``fast`` for a laptop
(small networks that train on 2,000 galaxies in minutes on two CPU cores), ``paper`` is the
paper's setup for GPU workers (ResNet50 at 197 px, Xception at 128 px, the custom network at
69 px, 30 epochs). Each key is described where it is read; ``benchmarks/README.md`` holds the
measurements that chose the values (the GBM grid of ``fast``, its shorter trainings, the
symmetries, CNN4 on colour's channels).

* ``gbm``: the M/L regressor's fixed ``params`` and the ``grid`` cross-validated around them.
* ``training`` / ``role_training``: every network's training settings, and changes for one role.
* ``feature_symmetries``: how many of the square's 8 symmetries each CNN feature is averaged over.
* ``image_bands``: the bands whose images the preprocess stage stores (``g``, and ``i`` with its
  g - i colour map).
* ``cnn``: each role's network (``arch``, input ``size``, builder ``options``); CNN4 is always
  CNN1's network retrained on M/L. ``colour_network``: CNN4 on colour, the network of the role
  named by ``from`` with one input channel per entry of ``channels``.
"""

from __future__ import annotations

import copy
from types import MappingProxyType

#: The paper's four networks, trained on every survey: the names their models and features are stored under.
CNN_ROLES = ("cnn1", "cnn2", "cnn3", "cnn4")
#: CNN4 on colour images: trained where the preset's image_bands hold i and the survey has them.
COLOUR_ROLE = "cnn4gi"
#: Every role a run can train, in training order (the colour role starts from CNN1-3's weights).
ALL_ROLES = (*CNN_ROLES, COLOUR_ROLE)
#: role -> the layers whose activations are features (docs/stages.md).
FEATURE_LAYERS: dict[str, tuple[str, ...]] = {
    "cnn1": ("gz2", "pool"),
    "cnn2": ("gz2",),
    "cnn3": ("gz2",),
    "cnn4": ("gz2_logits",),
    COLOUR_ROLE: ("gz2_logits",),
}
#: Roles trained on M/L (the others on GZ2 probabilities).
ML_ROLES = ("cnn4", COLOUR_ROLE)

#: The CNN feature sets (``role.layer``) of each GBM feature group: CNN1-3's, CNN4's and CNN4 on colour's.
CNN_GROUP_SETS: dict[str, tuple[str, ...]] = {
    "cnn123": tuple(f"{role}.{layer}" for role in CNN_ROLES[:3] for layer in FEATURE_LAYERS[role]),
    "cnn4": tuple(f"cnn4.{layer}" for layer in FEATURE_LAYERS["cnn4"]),
    COLOUR_ROLE: tuple(f"{COLOUR_ROLE}.{layer}" for layer in FEATURE_LAYERS[COLOUR_ROLE]),
}
#: Groups a survey may lack (no i images): a model reading one is fitted and predicts only where it is present.
OPTIONAL_GROUPS = (COLOUR_ROLE,)

PRESETS = MappingProxyType(
    {
        "test": MappingProxyType(
            {
                "resolutions": (48,),
                "chunk_size": 50,
                "cnn": {
                    "cnn1": {"arch": "custom", "size": 48, "options": {"width": 0.25, "dense_units": 32, "dropout": 0.0}},
                    "cnn2": {"arch": "custom", "size": 48, "options": {"width": 0.125, "dense_units": 16, "dropout": 0.0}},
                    "cnn3": {"arch": "custom", "size": 48, "options": {"width": 0.125, "dense_units": 16, "dropout": 0.0}},
                },
                "colour_network": {"from": "cnn1", "channels": ("g", "g-i")},
                "training": {"epochs": 2, "batch_size": 32, "learning_rate": 2e-3, "lr_patience": 4, "run_eagerly": True},
                "role_training": {"cnn2": {"epochs": 1}, "cnn4gi": {"epochs": 8}},
                "feature_chunk_size": 100,
                "feature_symmetries": 8,
                "image_bands": ("g", "i"),
                "gbm": {
                    "params": {
                        "num_leaves": 8,
                        "min_child_samples": 10,
                        "learning_rate": 0.1,
                        "n_estimators": 300,
                        "early_stopping_rounds": 20,
                    },
                    "grid": None,
                },
            }
        ),
        "fast": MappingProxyType(
            {
                "resolutions": (48, 69),
                "chunk_size": 200,
                "cnn": {
                    "cnn1": {"arch": "custom", "size": 69, "options": {"width": 0.5, "dense_units": 256, "dropout": 0.1}},
                    "cnn2": {"arch": "custom", "size": 48, "options": {"width": 0.5, "dense_units": 128, "dropout": 0.1}},
                    "cnn3": {"arch": "custom", "size": 69, "options": {"width": 0.5, "dense_units": 128, "dropout": 0.1}},
                },
                "colour_network": {"from": "cnn1", "channels": ("g", "g-i")},
                # early stopping: CNN4's best epoch came at 3-15 of 20 on the demo survey; CNN1-3 still improve at 20
                "training": {"epochs": 20, "batch_size": 32, "learning_rate": 1e-3, "lr_patience": 3, "stop_patience": 6},
                "role_training": {"cnn3": {"epochs": 12}, "cnn4gi": {"epochs": 12, "stop_patience": 4}},
                "feature_chunk_size": 500,
                "feature_symmetries": 8,
                "image_bands": ("g", "i"),
                # A few thousand training galaxies: smaller leaves than the paper's 150 are on the grid
                # (num_leaves and 20% of the features per tree never won there: see the docstring).
                "gbm": {
                    "params": {"learning_rate": 0.1, "num_leaves": 15, "colsample_bytree": 0.4},
                    "grid": {"min_child_samples": (20, 50, 150)},
                },
            }
        ),
        "paper": MappingProxyType(
            {
                "resolutions": (69, 128, 197),
                "chunk_size": 500,
                "cnn": {
                    "cnn1": {"arch": "resnet50", "size": 197, "options": {}},
                    "cnn2": {"arch": "xception", "size": 128, "options": {}},
                    "cnn3": {"arch": "custom", "size": 69, "options": {}},
                },
                # CNN1 is a ResNet50: the colour network is the paper's own (CNN3's) on two channels
                "colour_network": {"from": "cnn3", "channels": ("g", "g-i")},
                "training": {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3, "lr_patience": 4},
                "feature_chunk_size": 2000,
                "feature_symmetries": 1,
                "image_bands": ("g", "i"),
                "gbm": {"params": {}, "grid": "paper"},
            }
        ),
    }
)


def preset(name: str) -> dict:
    """A mutable deep copy of the named preset; unknown names fail with the choices."""
    try:
        return copy.deepcopy(dict(PRESETS[name]))
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def cnn_network(config: dict, role: str) -> dict:
    """The network of a CNN role; CNN4 shares CNN1's, the colour role that of its ``from`` role
    (with its ``channels``)."""
    if role == COLOUR_ROLE:
        colour = config["colour_network"]
        return {**config["cnn"][colour["from"]], "channels": list(colour["channels"]), "from": colour["from"]}
    return config["cnn"]["cnn1" if role == "cnn4" else role]


def network_roles(config: dict) -> tuple[str, ...]:
    """The roles a cnn run of this preset trains: CNN1-4, and CNN4 on colour where its images are made."""
    return ALL_ROLES if "i" in image_bands(config) and config.get("colour_network") else CNN_ROLES


def input_channels(config: dict, role: str) -> tuple[str, ...]:
    """The image-store channels a role's network reads, stacked in this order."""
    return tuple(cnn_network(config, role).get("channels", ("g",)))


def role_training(config: dict, role: str) -> dict:
    """The training settings of one role: the preset's ``training``, with what its
    ``role_training`` entry for that role changes (epochs, patience) on top."""
    return {**config["training"], **config.get("role_training", {}).get(role, {})}


def image_bands(config: dict) -> tuple[str, ...]:
    """The bands the preprocess stage stores images of (g first)."""
    bands = tuple(config.get("image_bands", ("g",)))
    if not bands or bands[0] != "g" or not set(bands) <= {"g", "i"}:
        raise ValueError(f"image_bands must be ('g',) or ('g', 'i'), got {bands}")
    return bands


def gbm_grid(config: dict) -> dict | None:
    """The preset's cross-validation grid (None: keep the fixed parameters)."""
    from pipeline.learning.model_selection import PAPER_GRID

    grid = config["gbm"]["grid"]
    return dict(PAPER_GRID) if grid == "paper" else grid
