"""The survey every test that only reads a trained model set shares: trained once per pytest session.

The synthetic survey without its star catalogue (star removal detects blindly, as for an
uploaded cutout), plus three galaxies outside the training selection (:data:`INJECTED`) and
with the i cutouts of every 12th ordinary galaxy deleted, taken through every stage of the
``test`` preset as one workflow by the one start path. Tests that change it take their own.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

TRAINED_SURVEY = "trained"


#: objid -> what makes it unlike the training galaxies (none of them has an M/L target).
INJECTED = {9000000000000000001: "redshift", 9000000000000000002: "luminosity", 9000000000000000003: "features"}


def inject_out_of_selection(bundle: Path, out: Path) -> Path:
    """A copy of a bundle plus three galaxies that pass ingest but lie outside the sample:
    a clone at redshift 0.5, a clone 7 mag fainter (its image 630 times dimmer), and a
    clone whose g image is pure sky noise."""
    from astropy.io import fits

    shutil.copytree(bundle, out)
    catalogue = Table.read(out / "catalogue.csv", format="ascii.csv")
    truth = Table.read(out / "truth.csv", format="ascii.csv")
    masked = np.ma.getmaskarray(truth["fault"])
    faulty = {int(o) for o, f, m in zip(truth["objid"], truth["fault"], masked, strict=True) if not m and str(f).strip()}
    template = next(row for row in catalogue if int(row["objid"]) not in faulty)  # an ordinary galaxy, not a fault
    rng = np.random.default_rng(0)
    for objid, kind in INJECTED.items():
        row = {name: template[name] for name in catalogue.colnames}
        row["objid"] = objid
        if kind == "redshift":
            row["z"] = 0.5
        if kind == "luminosity":
            for band in "ugriz":
                row[f"mag_{band}"] = str(float(template[f"mag_{band}"]) + 7.0)
        catalogue.add_row(row)
        for band in "gi":
            with fits.open(out / "images" / f"{template['objid']}_{band}.fits") as hdul:
                data, header = hdul[0].data.astype(np.float32), hdul[0].header
            if kind == "luminosity":
                data = data / 10 ** (7.0 / 2.5)
            if kind == "features" and band == "g":
                data = rng.normal(0.0, np.std(data[:8, :8]), data.shape).astype(np.float32)
            fits.PrimaryHDU(data, header).writeto(out / "images" / f"{objid}_{band}.fits")
    catalogue.write(out / "catalogue.csv", format="ascii.csv", overwrite=True)
    return out


#: Ordinary galaxies of the bundle whose i cutouts are deleted before ingest (every 12th).
NO_I_EVERY = 12


def delete_i_cutouts(bundle: Path) -> set[int]:
    """Delete the i cutout of every NO_I_EVERY-th ordinary galaxy; returns their objids."""
    truth = Table.read(bundle / "truth.csv", format="ascii.csv")
    masked = np.ma.getmaskarray(truth["fault"])
    ordinary = [int(o) for o, f, m in zip(truth["objid"], truth["fault"], masked, strict=True) if m or not str(f).strip()]
    gone = set(ordinary[::NO_I_EVERY])
    for objid in gone:
        (bundle / "images" / f"{objid}_i.fits").unlink()
    return gone


def trained_bundle(synthetic_bundle: Path, out: Path) -> tuple[Path, set[int]]:
    """The shared survey's bundle (see the module's docstring) and the objids without an i cutout."""
    bundle = inject_out_of_selection(synthetic_bundle, out / "injected")
    (bundle / "stars.csv").unlink()
    return bundle, delete_i_cutouts(bundle)


@dataclass
class Trained:
    """The shared survey, its workflow's run of each stage, its media folder and what makes it awkward."""

    survey: object
    runs: dict
    media: Path
    bundle: Path
    no_i: set[int] = field(default_factory=set)

    @property
    def model_set(self):
        from catalogue.models import ModelSet

        return ModelSet.objects.get(run=self.runs["gbm"])


def coverage_tolerance(level: float, n_test: int, n_calibration: int, sigmas: float = 3.0) -> float:
    """How far a working system's coverage at ``level`` may lie from it: ``sigmas`` binomial standard
    deviations of a coverage measured on ``n_test`` galaxies with intervals calibrated on ``n_calibration``."""
    import math

    return sigmas * math.sqrt(level * (1 - level) * (1 / n_test + 1 / n_calibration))


def shuffle_targets(survey) -> None:
    """Give the survey's galaxies each other's M/L targets (and errors), seeded: a pipeline trained on
    them can learn nothing about M/L, which ``pytest tests/test_learning.py --shuffle-targets`` shows."""
    from catalogue.models import Galaxy

    rows = list(Galaxy.objects.filter(survey=survey, ml_g__isnull=False).order_by("objid").values_list("pk", "ml_g", "ml_g_err"))
    order = np.random.default_rng(0).permutation(len(rows))
    for (pk, _, _), j in zip(rows, order, strict=True):
        Galaxy.objects.filter(pk=pk).update(ml_g=rows[j][1], ml_g_err=rows[j][2])
