"""A synthetic survey's GBM inputs with a known answer, for the regression and experiment tests.

M/L follows a g - i power law times a morphology factor that colour cannot see:
M/L = 10**(-0.9 + 1.1 (g - i)) x (1 + 0.6 disk), redder galaxies being brighter. One CNN1-3 column carries the disk flag
(with noise) among 59 pure-noise columns, so feature selection has something to find;
CNN1's probabilities make disks "disk" and the rest "elliptical" (edge-on for a few).
"""

from __future__ import annotations

import numpy as np

from pipeline import gz2
from pipeline.learning.data import IMAGE, LUMINOSITY, LearningData, assemble

#: Rows of each experiment's table (pipeline.experiments), whatever the data.
EXPERIMENT_TABLE_ROWS = {
    "single_band": 3,
    "ablation": 6,
    "colour": 3,
    "losses": 9,
    "band_sets": 11,  # with gi_images beside g, i + morphology
    "significance": 3,
    "half_data": 2,
    "colour_images": 3,
}
#: Galaxies of the synthetic learning data without an i image (no CNN4-on-colour features).
NO_I_FRACTION = 0.08
GBM_TEST_PARAMS = {
    "num_leaves": 15,
    "min_child_samples": 20,
    "learning_rate": 0.1,
    "n_estimators": 400,
    "early_stopping_rounds": 20,
}


def synthetic_learning_data(n: int = 1500, seed: int = 0) -> tuple[LearningData, np.ndarray]:
    """The data and the true M/L of every galaxy."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.02, 0.12, n)
    lum_dist = 4300.0 * z
    gi = rng.uniform(0.3, 1.3, n)
    disk = rng.random(n) < 0.5
    edge_on = disk & (rng.random(n) < 0.2)
    true_ml = 10 ** (-0.9 + 1.1 * gi) * (1 + 0.6 * disk)
    target = true_ml * (1 + rng.normal(0, 0.03, n)).clip(0.5)
    mag_g = 17.5 - 2.0 * (gi - 0.3) + rng.normal(0, 0.3, n)  # redder galaxies are brighter: L_g tells a little
    mags = {"u": mag_g + 1.2, "g": mag_g, "r": mag_g - 0.5 * gi, "i": mag_g - gi, "z": mag_g - gi - 0.1}
    brightness = 10 ** (-0.4 * mag_g) * lum_dist**2
    image = {name: brightness * rng.uniform(0.5, 1.5) for name in LUMINOSITY}
    image.update({name: rng.uniform(0, 1, n) for name in IMAGE})
    image["pixel_kpc"] = 0.4 * z / 0.05
    cnn123 = rng.normal(0, 1, (n, 60)).astype(np.float32)
    cnn123[:, 7] = disk + rng.normal(0, 0.1, n)
    cnn4 = rng.normal(0, 1, (n, 5)).astype(np.float32)
    # CNN4 on colour sees the colour (noisily); a galaxy without an i image has none of its features.
    cnn4gi = rng.normal(0, 1, (n, 5)).astype(np.float32)
    cnn4gi[:, 0] = gi + rng.normal(0, 0.05, n)
    cnn4gi[rng.random(n) < NO_I_FRACTION] = np.nan
    probabilities = np.full((n, gz2.N_ANSWERS), 0.05)
    probabilities[:, gz2.ANSWER_INDEX["a02"]] = np.where(disk, 0.8, 0.1)
    probabilities[:, gz2.ANSWER_INDEX["a04"]] = np.where(edge_on, 0.6, 0.05)
    split = rng.choice(np.array(["train", "val", "test"], dtype=object), n, p=[0.7, 0.15, 0.15])
    data = assemble(
        galaxy_ids=np.arange(1, n + 1),
        split=split,
        target=target,
        error=0.1 * target,
        redshift=z,
        lum_dist_mpc=lum_dist,
        magnitudes=mags,
        image_features=image,
        cnn1_probabilities=probabilities,
        cnn_groups={
            "cnn123": (cnn123, [f"cnn.c{i:02d}" for i in range(60)]),
            "cnn4": (cnn4, [f"cnn4.c{i}" for i in range(5)]),
            "cnn4gi": (cnn4gi, [f"cnn4gi.c{i}" for i in range(5)]),
        },
    )
    return data, true_ml
