"""Bundles made from the synthetic survey's for what a test needs: a g-only user's sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from astropy.table import Table

FAR_Z = 0.6  # the synthetic survey's redshifts stay below 0.2


def g_only(bundle: Path, out: Path, n: int = 60) -> tuple[Path, int]:
    """The first ``n`` good galaxies with only the columns a g-only user has, their g images, nothing else;
    the first of them moved to z = FAR_Z. Returns the bundle and that galaxy's objid."""
    truth = Table.read(bundle / "truth.csv", format="ascii.csv")
    faulty = {int(o) for o, f, m in zip(truth["objid"], truth["fault"], np.ma.getmaskarray(truth["fault"]), strict=True) if not m}
    catalogue = Table.read(bundle / "catalogue.csv", format="ascii.csv")
    keep = [i for i, objid in enumerate(catalogue["objid"]) if int(objid) not in faulty][:n]
    small = catalogue[keep]["objid", "ra", "dec", "z", "d25_arcmin", "mag_g", "magerr_g"]
    small["z"] = small["z"].astype(float)
    small["z"][0] = FAR_Z
    (out / "images").mkdir(parents=True)
    small.write(out / "catalogue.csv", format="ascii.csv")
    for objid in small["objid"]:
        shutil.copy(bundle / "images" / f"{objid}_g.fits", out / "images" / f"{objid}_g.fits")
    return out, int(small["objid"][0])
