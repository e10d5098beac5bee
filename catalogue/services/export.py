"""Export the galaxy table with units and descriptions (CSV, FITS, VOTable).

CSV is written as ECSV with comma delimiter: a plain CSV body that spreadsheets and
pandas (``comment='#'``) read, with a YAML header that keeps units and descriptions for
astropy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table

from catalogue.models import Galaxy, Survey

#: (field, unit, description)
EXPORT_COLUMNS: tuple[tuple[str, str | None, str], ...] = (
    ("objid", None, "SDSS-style photometric object id"),
    ("ra", "deg", "right ascension, J2000"),
    ("dec", "deg", "declination, J2000"),
    ("z", None, "spectroscopic redshift"),
    ("d25_arcmin", "arcmin", "HyperLeda D25 major axis"),
    *((f"mag_{b}", "mag", f"extinction-corrected {b} AB model magnitude") for b in "ugriz"),
    *((f"magerr_{b}", "mag", f"error of mag_{b}") for b in "ugriz"),
    ("lum_dist_mpc", "Mpc", "luminosity distance"),
    ("lum_g", "solLum", "g-band luminosity in solar g-band units (Lsun,g)"),
    ("ml_g", "solMass / solLum", "target g-band mass-to-light ratio (Msun/Lsun,g)"),
    ("ml_g_err", "solMass / solLum", "1-sigma error of ml_g (Msun/Lsun,g)"),
    ("chi2_r", None, "reduced chi2 of the SED fit"),
    ("split", None, "train / val / test, empty outside the learning sample"),
    ("status", None, "ok / excluded / rejected"),
    ("status_reason", None, "why a galaxy is excluded or rejected"),
)  # fmt: skip
FORMATS = {"csv": "ascii.ecsv", "fits": "fits", "votable": "votable"}


def galaxy_table(survey: Survey | None = None) -> Table:
    """The galaxy table as an astropy Table with units, descriptions and masks for missing values."""
    queryset = Galaxy.objects.all() if survey is None else Galaxy.objects.filter(survey=survey)
    names = [c[0] for c in EXPORT_COLUMNS]
    rows = list(queryset.order_by("survey_id", "objid").values_list(*names))
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    cosmo = f"FlatLambdaCDM H0={survey.h0} Om0={survey.om0}" if survey else "per survey"
    table = Table(meta={"SURVEY": survey.name if survey else "all", "COSMO": cosmo})
    for (name, unit, description), values in zip(EXPORT_COLUMNS, columns, strict=True):
        if name in {"split", "status", "status_reason"}:
            data = np.array([v or "" for v in values], dtype=str)
            table[name] = MaskedColumn(data, description=description, mask=np.zeros(len(data), bool))
            continue
        dtype = np.int64 if name == "objid" else np.float64
        mask = np.array([v is None for v in values], bool)
        data = np.array([0 if v is None else v for v in values], dtype=dtype)
        table[name] = MaskedColumn(data, mask=mask, unit=unit, description=description)
    return table


def export_catalogue(out: str | Path, fmt: str, survey: Survey | None = None) -> int:
    """Write the table to ``out`` in ``fmt`` (csv, fits or votable); returns the row count."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    table = galaxy_table(survey)
    kwargs = {"delimiter": ","} if fmt == "csv" else {}
    table.write(out, format=FORMATS[fmt], overwrite=True, **kwargs)
    return len(table)
