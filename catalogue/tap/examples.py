"""DALI examples at /tap/examples: worked ADQL queries a user copies (TOPCAT lists them in its TAP window).

The document is XHTML with RDFa (DALI 1.1 section 2.3): each example a ``div`` of
``typeof="example"`` with its ``name`` and ``query``. The cone is centred on a galaxy the
catalogue holds, so that a copied query returns rows on any deployment; tests run every
example (the upload one with a table).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

VOCABULARY = "http://www.ivoa.net/rdf/examples#"
#: Where the cone example looks when the catalogue is empty.
DEFAULT_CENTRE = (180.0, 30.0)


@dataclass(frozen=True)
class Example:
    id: str
    name: str
    description: str
    query: str  # str.format fields: ra, dec (the cone's centre, degrees)
    upload: bool = False  # reads TAP_UPLOAD.mine (a table with ra and dec columns)

    def text(self, centre: tuple[float, float] = DEFAULT_CENTRE) -> str:
        return self.query.format(ra=round(centre[0], 4), dec=round(centre[1], 4))


EXAMPLES: tuple[Example, ...] = (
    Example(
        "cone-with-predictions",
        "The catalogue's M/L of the galaxies in a cone",
        "Every galaxy within 1 degree of a position, with its predicted g-band M/L (solMass/solLum), the 68% "
        "interval, M* (solMass) and the model that gave them. The catalogue table holds each galaxy with the "
        "catalogue's M/L: of the model set applied to its survey, the best-validated model it has the inputs of.",
        "SELECT c.survey, c.objid, c.ra, c.dec, c.z, c.ml_pred, c.ml_lo68, c.ml_hi68, c.mstar_pred, c.model_name,\n"
        "       DISTANCE(POINT('ICRS', c.ra, c.dec), POINT('ICRS', {ra}, {dec})) AS dist_deg\n"
        "FROM morphomass.catalogue AS c\n"
        "WHERE 1 = CONTAINS(POINT('ICRS', c.ra, c.dec), CIRCLE('ICRS', {ra}, {dec}, 1.0))\n"
        "ORDER BY dist_deg",
    ),
    Example(
        "upload-crossmatch",
        "Crossmatch your own list (TAP UPLOAD)",
        "Upload a VOTable with ra and dec columns (degrees, ICRS) as TAP_UPLOAD.mine and get, for each of its "
        "rows, the catalogue galaxies within 2 arcsec with their predicted M/L. In TOPCAT: the TAP window's "
        "upload table; in pyvo: run_sync(query, uploads={'mine': table}). The sky index serves the match.",
        "SELECT u.*, c.survey, c.objid, c.ml_pred, c.ml_lo68, c.ml_hi68, c.mstar_pred,\n"
        "       DISTANCE(POINT('ICRS', u.ra, u.dec), POINT('ICRS', c.ra, c.dec)) * 3600 AS sep_arcsec\n"
        "FROM TAP_UPLOAD.mine AS u\n"
        "JOIN morphomass.catalogue AS c\n"
        "  ON 1 = CONTAINS(POINT('ICRS', c.ra, c.dec), CIRCLE('ICRS', u.ra, u.dec, 2.0 / 3600))",
        upload=True,
    ),
    Example(
        "flagged",
        "Flagged galaxies: predictions outside the training sample's support",
        "The catalogue's predictions flagged out of support (out_of_support = 1), with the reasons: these galaxies "
        "are unlike any the models were trained on, so their M/L is less certain than its interval says.",
        "SELECT TOP 200 c.survey, c.objid, c.ml_pred, c.ml_lo68, c.ml_hi68, c.support_reasons\n"
        "FROM morphomass.catalogue AS c\n"
        "WHERE c.out_of_support = 1\n"
        "ORDER BY ml_pred DESC",
    ),
    Example(
        "counts-per-class",
        "Galaxies and mean predicted M/L per morphology class",
        "How many galaxies each morphology class has, and their mean predicted M/L and M*.",
        "SELECT c.morphology, COUNT(*) AS n_galaxies, AVG(c.ml_pred) AS mean_ml, AVG(c.mstar_pred) AS mean_mstar\n"
        "FROM morphomass.catalogue AS c\n"
        "GROUP BY c.morphology\n"
        "ORDER BY n_galaxies DESC",
    ),
    Example(
        "model-sets",
        "Predictions per model set and model",
        "Each model set (<training survey>@<run>) and named model with how many galaxies it predicted and their "
        "mean M/L: a join of the predictions with the model sets.",
        "SELECT ms.name AS model_set, p.model_name, COUNT(*) AS n_predicted, AVG(p.ml_pred) AS mean_ml\n"
        "FROM morphomass.predictions AS p\n"
        "JOIN morphomass.model_sets AS ms ON ms.model_set_id = p.model_set_id\n"
        "GROUP BY ms.name, p.model_name\n"
        "ORDER BY model_set, model_name",
    ),
    Example(
        "mstar-distribution",
        "The stellar-mass distribution of each survey",
        "Galaxies per quarter-dex bin of predicted log10 M* (solMass), survey by survey.",
        "SELECT c.survey, FLOOR(LOG10(c.mstar_pred) * 4) / 4 AS log_mstar_bin, COUNT(*) AS n_galaxies\n"
        "FROM morphomass.catalogue AS c\n"
        "WHERE c.mstar_pred > 0\n"
        "GROUP BY c.survey, log_mstar_bin\n"
        "ORDER BY survey, log_mstar_bin",
    ),
)


def document(centre: tuple[float, float] = DEFAULT_CENTRE) -> bytes:
    """The examples document (XHTML + RDFa), the cone example centred on ``centre``."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML+RDFa 1.1//EN" "http://www.w3.org/MarkUp/DTD/xhtml-rdfa-2.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml" version="XHTML+RDFa 1.1" xml:lang="en">',
        "<head><title>MorphoMass TAP: example queries</title></head>",
        f'<body vocab="{VOCABULARY}">',
        "<h1>MorphoMass TAP: example queries</h1>",
        "<p>ADQL 2.1 for /tap (sync or async). M/L is the g-band mass-to-light ratio in solMass/solLum, M* in "
        "solMass, positions in degrees (ICRS). The tables and their columns: /tap/tables.</p>",
    ]
    for example in EXAMPLES:
        parts += [
            f'<div id="{example.id}" resource="#{example.id}" typeof="example">',
            f'<h2 property="name">{escape(example.name)}</h2>',
            f"<p>{escape(example.description)}</p>",
            f'<pre property="query">{escape(example.text(centre))}</pre>',
            "</div>",
        ]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts).encode()
