"""A survey of generated catalogue rows with a model set's predictions, for the API and load benchmarks.

No images: only what the catalogue endpoints read. The set has every named model (with a
validation L1 each), and three of them predicted the galaxies: g_morph and lgz every one,
gi_morph those with an i magnitude (four in five); nineteen in twenty were preprocessed. So
the catalogue's M/L (catalogue.selectors.catalogue_ml) chooses among three joined models per
galaxy, as on a real survey. On PostgreSQL the rows go in by COPY (700,000 galaxies and their
predictions in about two minutes).
"""

from __future__ import annotations

import json

import numpy as np
from django.db import connection
from django.utils import timezone

from catalogue.models import Galaxy, ModelSet, Prediction, Preprocessed, Run, Survey, TrainedModel
from pipeline.learning.named_models import CATALOGUE_MODEL, GI_MORPH, LGZ, NAMED_MODEL_NAMES
from pipeline.sky import healpix_index, unit_vector

SURVEY = "bench-api"
#: Validation L1 of the set's named models (the demo's, roughly): the catalogue ranks them by it.
VALIDATION_L1 = {"gi_images": 1.4, "gi_morph": 1.6, "powerlaw_gi": 1.95, "gi": 2.0, "g_morph": 2.4, "constant": 5.35, "lgz": 5.4}
#: The models whose predictions the survey gets, and which galaxies each predicts.
PREDICTED = (CATALOGUE_MODEL, GI_MORPH, LGZ)


def _generated_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Catalogue columns for ``n`` galaxies in a 20 x 10 degree field, with the spreads real ones have."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(140, 160, n), rng.uniform(-5, 5, n)
    # in sky order, as ingest writes a survey's galaxies (catalogue.services.galaxy_writer)
    order = np.argsort(healpix_index(ra, dec), kind="stable")
    ra, dec = ra[order], dec[order]
    x, y, z = unit_vector(ra, dec)
    mag_g = rng.uniform(13, 17.7, n)
    return {
        "objid": 10**15 + np.arange(n),
        "ra": ra,
        "dec": dec,
        "healpix": healpix_index(ra, dec),
        "sky_x": x,
        "sky_y": y,
        "sky_z": z,
        "z": rng.uniform(0.01, 0.1, n),
        "d25_arcmin": rng.uniform(0.2, 2.0, n),
        "lum_dist_mpc": rng.uniform(40, 450, n),
        "lum_g": 10 ** rng.uniform(9, 11, n),
        "ml_g": rng.lognormal(1, 0.5, n),
        "ml_g_err": np.full(n, 0.3),
        "mag_g": mag_g,
        "magerr_g": np.full(n, 0.02),
        "mag_i": np.where(rng.uniform(size=n) < 0.8, mag_g - rng.uniform(0.3, 1.3, n), np.nan),
        "magerr_i": np.full(n, 0.02),
        "split": rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1]),
        "morphology": rng.choice(["disk", "elliptical", "edge-on", "irregular"], n),
    }


def _insert(model, fixed: dict, columns: dict[str, np.ndarray]) -> None:
    """Rows of ``model``: the ``fixed`` values in every row, ``columns`` one value a row; by COPY on PostgreSQL."""
    names = list(columns)
    if connection.vendor != "postgresql":
        plain = {k: columns[k].tolist() for k in names}  # Python values (None stays None)
        rows = [model(**fixed, **{k: plain[k][i] for k in names}) for i in range(len(plain[names[0]]))]
        model.objects.bulk_create(rows, batch_size=5000)
        return
    head = tuple(json.dumps(v) if isinstance(v, dict | list) else v for v in fixed.values())
    statement = f"COPY {model._meta.db_table} ({', '.join([*fixed, *names])}) FROM STDIN"
    with connection.cursor() as cursor, cursor.connection.cursor().copy(statement) as copy:
        for row in zip(*(columns[k].tolist() for k in names), strict=True):
            copy.write_row(head + row)


def make_survey(n: int, seed: int = 0) -> tuple[Survey, TrainedModel]:
    """A survey of ``n`` galaxies and its model set's predictions (with intervals), by COPY on PostgreSQL;
    returns it with its g_morph model."""
    survey = Survey.objects.create(name=SURVEY)
    columns = _generated_rows(n, seed)
    run = Run.objects.create(stage="gbm", survey=survey, status="succeeded", preset="test")
    model_set = ModelSet.objects.create(name=f"{SURVEY}@{run.pk}", survey=survey, run=run, preset="test", is_current=True)
    models = {
        name: TrainedModel.objects.create(
            kind="gbm",
            name=name,
            survey=survey,
            run=run,
            preset="test",
            model_set=model_set,
            metrics={"val": {"l1": VALIDATION_L1[name]}},
        )
        for name in NAMED_MODEL_NAMES
    }
    # the set applied to the survey: what every page, the cone search and TAP's catalogue table show
    Run.objects.create(
        stage="predict",
        survey=survey,
        status="succeeded",
        preset="test",
        config={"model_set": model_set.pk, "models": {name: models[name].pk for name in PREDICTED}},
        result={"skipped": {name: "not predicted in the benchmark" for name in NAMED_MODEL_NAMES if name not in PREDICTED}},
        finished=timezone.now(),
    )
    fixed = {"survey_id": survey.pk, "status": "ok", "ml_source": "catalogue", "status_reason": "", "extra": {}}
    columns["mag_i"] = np.where(np.isfinite(columns["mag_i"]), columns["mag_i"], None)
    _insert(Galaxy, fixed, columns)
    ids = np.array(Galaxy.objects.filter(survey=survey).order_by("objid").values_list("id", flat=True))
    preprocessed = np.random.default_rng(seed + 3).uniform(size=n) < 0.95
    _insert(
        Preprocessed,
        {"status": "ok", "error": "", "n_stars_removed": 0, "features": {}, "i_band": "", "updated": timezone.now()},
        {"galaxy_id": ids[preprocessed], "scaling_value": np.full(int(preprocessed.sum()), 30.0)},
    )
    has_i = np.array([m is not None for m in columns["mag_i"]])
    for k, name in enumerate(PREDICTED):
        chosen = has_i if name == GI_MORPH else np.ones(n, dtype=bool)
        ml = np.random.default_rng(seed + 10 + k).lognormal(1, 0.5, n)[chosen]
        width = np.random.default_rng(seed + 20 + k).uniform(0.1, 0.3, n)[chosen]
        prediction = {
            "galaxy_id": ids[chosen],
            "ml_pred": ml,
            "mstar_pred": ml * columns["lum_g"][chosen],
            "ml_lo68": ml * (1 - width),
            "ml_hi68": ml * (1 + width),
            "ml_lo95": ml * (1 - 1.8 * width),
            "ml_hi95": ml * (1 + 2 * width),
            "out_of_support": ml > 8,
        }
        _insert(Prediction, {"model_id": models[name].pk, "support_reasons": [], "created": timezone.now()}, prediction)
    flagged = Prediction.objects.filter(model__model_set=model_set, out_of_support=True)
    flagged.update(support_reasons=["ml_pred above the training range"])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE catalogue_galaxy; ANALYZE catalogue_prediction; ANALYZE catalogue_preprocessed")
    return survey, models[CATALOGUE_MODEL]


def survey_of(n: int, reuse: bool = False) -> Survey:
    """The benchmark survey of ``n`` galaxies: the one a previous ``--keep`` run left, or a new one."""
    survey = Survey.objects.filter(name=SURVEY).first() if reuse else None
    if survey is None or survey.galaxies.count() != n:
        Survey.objects.filter(name=SURVEY).delete()
        survey, _ = make_survey(n)
    return survey
