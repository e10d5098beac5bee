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


def ordinary_objids(bundle: Path, n: int, skip: int = 0) -> list[int]:
    """``n`` objids of the bundle's galaxies without an injected fault (after the first ``skip``), in catalogue order."""
    truth = Table.read(bundle / "truth.csv", format="ascii.csv")
    masked = np.ma.getmaskarray(truth["fault"])
    faulty = {int(o) for o, f, m in zip(truth["objid"], truth["fault"], masked, strict=True) if not m and str(f).strip()}
    catalogue = Table.read(bundle / "catalogue.csv", format="ascii.csv")
    ordinary = [int(o) for o in catalogue["objid"] if int(o) not in faulty and (bundle / "images" / f"{o}_g.fits").exists()]
    return ordinary[skip : skip + n]


def sample_table(
    bundle: Path, objids: list[int], out: Path, columns=("objid", "z", "mag_g", "magerr_g", "mag_i", "ra", "dec")
) -> Path:
    """A user's table of those galaxies: their catalogue rows, only ``columns`` (CSV, VOTable or FITS by suffix)."""
    catalogue = Table.read(bundle / "catalogue.csv", format="ascii.csv")
    rows = catalogue[[i for i, o in enumerate(catalogue["objid"]) if int(o) in set(objids)]]
    table = rows[list(columns)]
    fmt = {".csv": "ascii.csv", ".vot": "votable", ".xml": "votable", ".fits": "fits"}[out.suffix]
    table.write(out, format=fmt, overwrite=True)
    return out


def sample_archive(bundle: Path, objids: list[int], out: Path, bands: str = "gi", extra: dict[str, bytes] | None = None) -> Path:
    """A zip (or tar.gz, by ``out``'s name) of those galaxies' cutouts under ``images/``, plus ``extra`` entries
    (name -> bytes) written under exactly the name given, ``../`` and all."""
    import tarfile
    import zipfile

    files = {
        f"images/{objid}_{band}.fits": bundle / "images" / f"{objid}_{band}.fits"
        for objid in objids
        for band in bands
        if (bundle / "images" / f"{objid}_{band}.fits").exists()
    }
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as archive:
            for name, path in files.items():
                archive.write(path, name)
            for name, data in (extra or {}).items():
                archive.writestr(zipfile.ZipInfo(name), data)
        return out
    import io

    with tarfile.open(out, "w:gz") as archive:
        for name, path in files.items():
            archive.add(path, name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out
