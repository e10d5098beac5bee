"""Export the galaxy table with units and descriptions (CSV, FITS, VOTable).

CSV is written as ECSV with comma delimiter: a plain CSV body that spreadsheets and
pandas (``comment='#'``) read, with a YAML header that keeps units and descriptions for
astropy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable.exceptions import W50
from astropy.table import MaskedColumn, Table
from astropy.units import UnitsWarning

from catalogue.models import Galaxy, Prediction, Survey, TrainedModel
from pipeline import units

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
    ("lum_g", units.LUMINOSITY, "g-band luminosity in g-band solar luminosities (AB M_sun,g = 5.11)"),
    ("ml_g", units.MASS_TO_LIGHT, "target g-band mass-to-light ratio"),
    ("ml_g_err", units.MASS_TO_LIGHT, "1-sigma error of ml_g"),
    ("chi2_r", None, "reduced chi2 of the SED fit"),
    ("split", None, "train / val / test, empty outside the learning sample"),
    ("status", None, "ok / excluded / rejected"),
    ("status_reason", None, "why a galaxy is excluded or rejected"),
)  # fmt: skip
FORMATS = {"csv": "ascii.ecsv", "fits": "fits", "votable": "votable"}


PREDICTION_COLUMNS = (
    ("ml_pred", units.MASS_TO_LIGHT, "predicted g-band mass-to-light ratio"),
    ("mstar_pred", units.STELLAR_MASS, "stellar mass implied by ml_pred and lum_g"),
)


def prediction_model(survey: Survey | None, name: str) -> TrainedModel:
    """The survey's latest model called ``name``, which must have predicted the catalogue.

    Raises
    ------
    ValueError
        without a survey, without such a model, or when it has no predictions yet.
    """
    if survey is None:
        raise ValueError("predictions belong to one survey's model: give the survey as well as the model")
    model = TrainedModel.objects.filter(survey=survey, name=name).order_by("-created", "-pk").first()
    if model is None:
        names = sorted(set(TrainedModel.objects.filter(survey=survey).values_list("name", flat=True)))
        raise ValueError(f"survey {survey.name} has no model named {name!r}; it has: {', '.join(names) or 'none'}")
    if not Prediction.objects.filter(model=model).exists():
        raise ValueError(f"model {name} #{model.pk} of survey {survey.name} has no predictions yet; run the predict stage")
    return model


def galaxy_table(survey: Survey | None = None, model: TrainedModel | None = None) -> Table:
    """The galaxy table as an astropy Table with units, descriptions and masks for missing values.

    With ``model``, its predicted M/L and stellar mass are added (masked where it gave none).
    """
    queryset = Galaxy.objects.all() if survey is None else Galaxy.objects.filter(survey=survey)
    names = [c[0] for c in EXPORT_COLUMNS]
    rows = list(queryset.order_by("survey_id", "objid").values_list("id", *names))
    ids = [r[0] for r in rows]
    rows = [r[1:] for r in rows]
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
    if model is not None:
        predicted = {
            g: (ml, mass)
            for g, ml, mass in Prediction.objects.filter(model=model).values_list("galaxy_id", "ml_pred", "mstar_pred")
        }
        for position, (name, unit, description) in enumerate(PREDICTION_COLUMNS):
            values = [predicted.get(g, (None, None))[position] for g in ids]
            mask = np.array([v is None for v in values], bool)
            data = np.array([0.0 if v is None else v for v in values], dtype=np.float64)
            table[name] = MaskedColumn(data, mask=mask, unit=unit, description=f"{description} (model {model.name} #{model.pk})")
        table.meta["MODEL"] = f"{model.name} #{model.pk}, run #{model.run_id}"
    return table


def export_catalogue(out: str | Path, fmt: str, survey: Survey | None = None, model_name: str | None = None) -> int:
    """Write the table to ``out`` in ``fmt`` (csv, fits or votable); returns the row count.

    ``model_name`` adds ``ml_pred`` and ``mstar_pred`` from the survey's latest model of that name.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    table = galaxy_table(survey, prediction_model(survey, model_name) if model_name else None)
    if fmt == "fits":
        write_fits(table, out)
        return len(table)
    kwargs = {"delimiter": ","} if fmt == "csv" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", W50)  # Lsun_g is not in the VOUnit list; the string is kept
        table.write(out, format=FORMATS[fmt], overwrite=True, **kwargs)
    return len(table)


def write_fits(table: Table, out: str | Path) -> None:
    """FITS binary table with every column's unit in TUNITn.

    astropy leaves out units the FITS standard does not know (our g-band solar luminosity,
    with a warning); they are written into the header here as strings, which astropy reads
    back as the same unit name. Descriptions travel in astropy's serialized-column header.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        table.write(out, format="fits", overwrite=True)
    with fits.open(out, mode="update") as hdul:
        header = hdul[1].header
        for i, column in enumerate(table.itercols(), 1):
            if column.unit is not None and f"TUNIT{i}" not in header:
                header[f"TUNIT{i}"] = column.unit.to_string()
