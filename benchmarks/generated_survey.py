"""A survey of generated catalogue rows with one model's predictions, for the API and load benchmarks.

No images: only what the catalogue endpoints read. On PostgreSQL the rows go in by COPY
(700,000 galaxies and their predictions in about half a minute).
"""

from __future__ import annotations

import numpy as np
from django.db import connection

from catalogue.models import Galaxy, Prediction, Run, Survey, TrainedModel
from pipeline.sky import healpix_index, unit_vector

SURVEY = "bench-api"


def _generated_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Catalogue columns for ``n`` galaxies in a 20 x 10 degree field, with the spreads real ones have."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(140, 160, n), rng.uniform(-5, 5, n)
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
        "mag_i": mag_g - rng.uniform(0.3, 1.3, n),
        "magerr_i": np.full(n, 0.02),
        "split": rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1]),
        "morphology": rng.choice(["disk", "elliptical", "edge-on", "irregular"], n),
    }


def make_survey(n: int, seed: int = 0) -> tuple[Survey, TrainedModel]:
    """A survey of ``n`` galaxies and one model's predictions (with intervals), by COPY on PostgreSQL."""
    survey = Survey.objects.create(name=SURVEY)
    columns = _generated_rows(n, seed)
    run = Run.objects.create(stage="gbm", survey=survey, status="succeeded", preset="test")
    model = TrainedModel.objects.create(kind="gbm", name="g_morph", survey=survey, run=run, preset="test")
    ml = np.random.default_rng(seed + 1).lognormal(1, 0.5, n)
    if connection.vendor != "postgresql":
        Galaxy.objects.bulk_create(
            [Galaxy(survey=survey, **{k: v[i].item() for k, v in columns.items()}) for i in range(n)], batch_size=5000
        )
    else:
        names = list(columns)
        with connection.cursor() as cursor:
            fixed = "survey_id, status, ml_source, status_reason, extra"
            statement = f"COPY catalogue_galaxy ({fixed}, {', '.join(names)}) FROM STDIN"
            with cursor.connection.cursor().copy(statement) as copy:
                values = [columns[k].tolist() for k in names]
                for row in zip(*values, strict=True):
                    copy.write_row((survey.pk, "ok", "catalogue", "", "{}", *row))
    ids = np.array(Galaxy.objects.filter(survey=survey).order_by("objid").values_list("id", flat=True))
    width = np.random.default_rng(seed + 2).uniform(0.1, 0.3, n)
    prediction = {
        "galaxy_id": ids,
        "ml_pred": ml,
        "mstar_pred": ml * columns["lum_g"],
        "ml_lo68": ml * (1 - width),
        "ml_hi68": ml * (1 + width),
        "ml_lo95": ml * (1 - 1.8 * width),
        "ml_hi95": ml * (1 + 2 * width),
        "out_of_support": ml > 8,
    }
    if connection.vendor != "postgresql":
        Prediction.objects.bulk_create(
            [Prediction(model=model, **{k: v[i].item() for k, v in prediction.items()}) for i in range(n)], batch_size=5000
        )
    else:
        names = list(prediction)
        with connection.cursor() as cursor:
            statement = f"COPY catalogue_prediction (model_id, support_reasons, created, {', '.join(names)}) FROM STDIN"
            with cursor.connection.cursor().copy(statement) as copy:
                values = [prediction[k].tolist() for k in names]
                for row in zip(*values, strict=True):
                    reasons = '["ml_pred above the training range"]' if row[-1] else "[]"
                    copy.write_row((model.pk, reasons, "2026-01-01T00:00:00Z", *row))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE catalogue_galaxy; ANALYZE catalogue_prediction")
    return survey, model


def survey_of(n: int, reuse: bool = False) -> Survey:
    """The benchmark survey of ``n`` galaxies: the one a previous ``--keep`` run left, or a new one."""
    survey = Survey.objects.filter(name=SURVEY).first() if reuse else None
    if survey is None or survey.galaxies.count() != n:
        Survey.objects.filter(name=SURVEY).delete()
        survey, _ = make_survey(n)
    return survey
