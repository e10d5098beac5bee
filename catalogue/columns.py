"""Every catalogue and prediction quantity, described once: name, unit, UCD, description, type.

The model fields' help texts, the exports (CSV, ECSV, FITS, VOTable, Parquet), the API's
serializers and schema, the filters, the pages and (later) TAP_SCHEMA all read these
descriptions, so a quantity's unit or description is changed here and nowhere else.
Units come from :mod:`pipeline.units`; UCDs are IVOA UCD1+ words. See docs/architecture.md
for adding a column.

This module imports nothing of Django, so the data model can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import units
from pipeline.learning.named_models import NAMED_MODEL_NAMES


@dataclass(frozen=True)
class Column:
    """One quantity of the catalogue.

    ``kind`` is ``float``, ``int`` or ``str`` (``width``: the most characters, for formats
    of fixed width such as FITS); ``label`` is the short heading of a page's table.
    """

    name: str
    unit: str | None
    description: str
    ucd: str = ""
    kind: str = "float"
    width: int = 0
    label: str = ""

    @property
    def help_text(self) -> str:
        """The description with its unit first ("deg, right ascension, J2000"), as model fields and the API show it."""
        return f"{self.unit}, {self.description}" if self.unit else self.description

    @property
    def heading(self) -> str:
        """The page heading: the label (or the name)."""
        return self.label or self.name


#: SDSS band -> the UCD1+ spectral word of the band.
BAND_UCD = {"u": "em.opt.U", "g": "em.opt.B", "r": "em.opt.R", "i": "em.opt.I", "z": "em.opt.I"}
MAGNITUDE = "mag"

GALAXY_COLUMNS: tuple[Column, ...] = (
    Column("objid", None, "SDSS-style photometric object id", "meta.id;meta.main", "int", label="objid"),
    Column("ra", "deg", "right ascension, J2000", "pos.eq.ra;meta.main", label="RA"),
    Column("dec", "deg", "declination, J2000", "pos.eq.dec;meta.main", label="Dec"),
    Column("z", None, "spectroscopic redshift", "src.redshift", label="z"),
    Column("d25_arcmin", "arcmin", "HyperLeda D25 major axis", "phys.angSize;src", label="D25"),
    *(
        Column(f"mag_{b}", MAGNITUDE, f"extinction-corrected {b} AB model magnitude", f"phot.mag;{BAND_UCD[b]}", label=b)
        for b in "ugriz"
    ),
    *(
        Column(f"magerr_{b}", MAGNITUDE, f"error of mag_{b}", f"stat.error;phot.mag;{BAND_UCD[b]}", label=f"{b} error")
        for b in "ugriz"
    ),
    Column("lum_dist_mpc", "Mpc", "luminosity distance", "pos.distance", label="luminosity distance"),
    Column(
        "lum_g",
        units.LUMINOSITY,
        "g-band luminosity in g-band solar luminosities (AB M_sun,g = 5.11), from mag_g",
        "phys.luminosity;em.opt.B",
        label="L_g",
    ),
    Column(
        "ml_g",
        units.MASS_TO_LIGHT,
        f"target g-band mass-to-light ratio ({units.BAND_NOTE})",
        "phys.composition.massLightRatio;em.opt.B",
        label="M/L_g",
    ),
    Column(
        "ml_g_err",
        units.MASS_TO_LIGHT,
        f"1-sigma error of ml_g ({units.BAND_NOTE})",
        "stat.error;phys.composition.massLightRatio",
        label="M/L_g error",
    ),
    Column("chi2_r", None, "reduced chi2 of the SED fit", "stat.fit.chi2", label="SED fit reduced chi2"),
    Column("split", None, "train / val / test, empty outside the learning sample", "meta.code", "str", 5, label="split"),
    Column("status", None, "ok / excluded / rejected", "meta.code.status", "str", 8, label="status"),
    Column("status_reason", None, "why a galaxy is excluded or rejected", "meta.note", "str", 300, label="reason"),
    Column(
        "morphology",
        None,
        "irregular / edge-on / disk / elliptical from CNN1's GZ2 probabilities (set by the predict stage)",
        "src.morph.type",
        "str",
        10,
        label="morphology",
    ),
)

#: What the cone search (and later TAP) adds to a galaxy's row: which survey it is in, which
#: model set its predictions come from, and links to its page and its g cutout.
SERVICE_COLUMNS: tuple[Column, ...] = (
    Column(
        "survey",
        None,
        "name of the survey the galaxy was ingested in (objids repeat across surveys)",
        "meta.dataset",
        "str",
        100,
        label="survey",
    ),
    Column(
        "model_set",
        None,
        "model set of the predictions (training survey@run): the set applied to the survey last",
        "meta.id",
        "str",
        200,
        label="model set",
    ),
    Column(
        "galaxy_url",
        None,
        "the galaxy's page: images, predictions of every model, GZ2 probabilities",
        "meta.ref.url",
        "str",
        300,
        label="page",
    ),
    Column("cutout_g_url", None, "the galaxy's g-band FITS cutout", "meta.ref.url;em.opt.B", "str", 300, label="g cutout"),
)

#: Interval end -> the word of its description and its UCD.
_ENDS = {"lo": ("lower", "stat.min"), "hi": ("upper", "stat.max")}
INTERVAL_LEVELS = (68, 95)
_QUANTITIES = {
    "ml": (units.MASS_TO_LIGHT, "calibrated {level}% g-band M/L interval", "phys.composition.massLightRatio;em.opt.B"),
    "mstar": (units.STELLAR_MASS, "{level}% stellar-mass interval", "phys.mass"),
}

PREDICTION_COLUMNS: tuple[Column, ...] = (
    Column(
        "ml_pred",
        units.MASS_TO_LIGHT,
        f"predicted g-band mass-to-light ratio ({units.BAND_NOTE})",
        "phys.composition.massLightRatio;em.opt.B",
        label="predicted M/L",
    ),
    Column("mstar_pred", units.STELLAR_MASS, "stellar mass implied by ml_pred and lum_g", "phys.mass", label="M*"),
    *(
        Column(
            f"{quantity}_{side}{level}",
            unit,
            f"{_ENDS[side][0]} end of the {what.format(level=level)}",
            f"{_ENDS[side][1]};{ucd}",
            label=f"{quantity} {level}% {_ENDS[side][0]}",
        )
        for quantity, (unit, what, ucd) in _QUANTITIES.items()
        for level in INTERVAL_LEVELS
        for side in _ENDS
    ),
    Column(
        "out_of_support",
        None,
        "1 if the galaxy lies outside what the model was trained on",
        "meta.code.qual",
        "int",
        label="out of selection",
    ),
    Column("support_reasons", None, "why it lies outside the training support", "meta.note", "str", 300, label="reasons"),
)

#: The catalogue's M/L of a galaxy: the prediction of the best-validated named model of its survey's
#: model set among those whose inputs the galaxy has (catalogue.selectors.catalogue_ml), with the
#: model named. The interval and flag columns are a prediction's own.
CATALOGUE_ML_COLUMNS: tuple[Column, ...] = (
    Column(
        "ml",
        units.MASS_TO_LIGHT,
        f"the catalogue's predicted g-band mass-to-light ratio, by ml_model ({units.BAND_NOTE})",
        "phys.composition.massLightRatio;em.opt.B;meta.main",
        label="M/L",
    ),
    *(c for c in PREDICTION_COLUMNS if c.name.startswith("ml_") and c.name[-2:].isdigit()),
    Column("mstar", units.STELLAR_MASS, "stellar mass implied by ml and lum_g", "phys.mass;meta.main", label="M*"),
    *(c for c in PREDICTION_COLUMNS if c.name.startswith("mstar_") and c.name[-2:].isdigit()),
    Column(
        "ml_model",
        None,
        "the named model of ml: the best-validated (lowest validation L1) whose inputs the galaxy has",
        "meta.id",
        "str",
        20,
        label="model",
    ),
    Column("ml_model_set", None, "the model set of ml_model (training survey@run)", "meta.id", "str", 200, label="model set"),
    Column(
        "scaling_fallback",
        None,
        "1 if the g image was too shallow for the paper's log scaling (no scaling value reaches the target "
        "noise level) and was scaled with the closest one",
        "meta.code.qual",
        "int",
        label="shallow image",
    ),
    # last, as a prediction's own columns end (the exports read the flag and its reasons there)
    *(c for c in PREDICTION_COLUMNS if c.name in ("out_of_support", "support_reasons")),
)
CATALOGUE_ML_FIELDS: tuple[str, ...] = tuple(c.name for c in CATALOGUE_ML_COLUMNS)

#: The interval columns of a prediction: ml_lo68, ml_hi68, ..., mstar_hi95.
INTERVAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in PREDICTION_COLUMNS if c.name[-2:].isdigit())
PREDICTION_FIELDS: tuple[str, ...] = tuple(c.name for c in PREDICTION_COLUMNS)

#: The catalogue columns a list can be sorted by (API ``ordering``, the web UI's headings);
#: each has a (survey, column) index, so a sorted page is an index walk, not a sort of the survey.
ORDERABLE_COLUMNS: tuple[str, ...] = ("objid", "ra", "dec", "z", "ml_g", "lum_g", "d25_arcmin")
_BY_NAME = {c.name: c for c in GALAXY_COLUMNS + PREDICTION_COLUMNS + CATALOGUE_ML_COLUMNS}


def column(name: str) -> Column:
    """The description of one quantity (``KeyError`` naming the known ones for any other)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no column {name!r}; known: {', '.join(_BY_NAME)}") from None


def help_text(name: str) -> str:
    """A model field's help text: the column's unit and description."""
    return column(name).help_text


#: The keys and bookkeeping TAP's tables add (see catalogue/tap/schema.py): ids for the joins,
#: the sky index behind CONTAINS, and what describes a model, a model set and a survey.
TAP_COLUMNS: tuple[Column, ...] = (
    Column("galaxy_id", None, "the service's id of a galaxy row (a galaxy's page is /galaxies/<galaxy_id>/)", "meta.id", "int"),
    Column("survey_id", None, "id of the survey (surveys.survey_id)", "meta.id", "int"),
    Column("model_id", None, "id of the model (models.model_id)", "meta.id", "int"),
    Column("model_set_id", None, "id of the model set (model_sets.model_set_id)", "meta.id", "int"),
    Column("model_name", None, f"the named M/L model: {', '.join(NAMED_MODEL_NAMES)}", "meta.id", "str"),
    Column("name", None, "name", "meta.id;meta.main", "str"),
    Column("kind", None, "cnn, gbm or baseline", "meta.code.class", "str"),
    Column("preset", None, "named configuration the model or set was trained with (test, fast, paper)", "meta.code", "str"),
    Column("created", None, "when the row was made (UTC, ISO 8601)", "time.creation", "str"),
    Column("is_current", None, "1 for the set applied when its training survey's name is given", "meta.code", "int"),
    Column("has_star_catalogue", None, "1 if the bundle had stars.csv (star removal's prior)", "meta.code", "int"),
    Column("h0", "km.s-1.Mpc-1", "Hubble constant of the survey's FlatLambdaCDM cosmology"),
    Column("om0", None, "matter density of the survey's FlatLambdaCDM cosmology"),
    Column("n_galaxies", None, "galaxies ingested (rejected ones included)", "meta.number", "int"),
    Column("healpix", None, "nested HEALPix index of the position at order 16 (the sky index)", "pos.healpix", "int"),
    *(Column(f"sky_{a}", None, f"{a} of the position's unit vector (the sky index)", f"pos.cartesian.{a}") for a in "xyz"),
)
