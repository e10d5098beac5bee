"""API throughput: catalogue pages, one galaxy, cone searches and streamed downloads.

Creates a survey of ``--n`` galaxies with one model's predictions (catalogue rows only, no
images) in the configured database, then times requests through Django's test client, in
this process: the server's own cost, without a network or a WSGI server in front. Prints
one JSON object; the survey is deleted afterwards.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/api.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
os.environ.setdefault("API_ANON_RATE", "1000000/minute")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from catalogue.models import Galaxy, Prediction, Run, Survey, TrainedModel  # noqa: E402
from pipeline.sky import healpix_index, unit_vector  # noqa: E402

SURVEY = "bench-api"


def make_survey(n: int, seed: int = 0) -> tuple[Survey, TrainedModel]:
    rng = np.random.default_rng(seed)
    survey = Survey.objects.create(name=SURVEY)
    ra, dec = rng.uniform(140, 160, n), rng.uniform(-5, 5, n)
    x, y, z = unit_vector(ra, dec)
    pix = healpix_index(ra, dec)
    splits = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    Galaxy.objects.bulk_create(
        [
            Galaxy(
                survey=survey,
                objid=10**15 + i,
                ra=ra[i],
                dec=dec[i],
                sky_x=x[i],
                sky_y=y[i],
                sky_z=z[i],
                healpix=int(pix[i]),
                z=float(rng.uniform(0.01, 0.1)),
                mag_g=float(rng.uniform(13, 17.7)),
                ml_g=float(rng.lognormal(1, 0.5)),
                ml_g_err=0.3,
                split=splits[i],
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    run = Run.objects.create(stage="gbm", survey=survey, status="succeeded", preset="test")
    model = TrainedModel.objects.create(kind="gbm", name="g_morph", survey=survey, run=run, preset="test")
    ml = rng.lognormal(1, 0.5, n)
    Prediction.objects.bulk_create(
        [
            Prediction(galaxy_id=gid, model=model, ml_pred=float(m), mstar_pred=float(m) * 1e10)
            for gid, m in zip(Galaxy.objects.filter(survey=survey).order_by("id").values_list("id", flat=True), ml, strict=True)
        ],
        batch_size=5000,
    )
    return survey, model


def timed(client: Client, url: str, repeat: int) -> tuple[float, bytes]:
    """Median seconds of ``repeat`` GETs and the last body (streamed bodies read whole)."""
    times, body = [], b""
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code, body[:300])
    return float(np.median(times)), body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    Survey.objects.filter(name=SURVEY).delete()
    start = time.perf_counter()
    survey, model = make_survey(args.n)
    setup_s = time.perf_counter() - start
    client = Client(HTTP_HOST="127.0.0.1")
    try:
        page_s, _ = timed(client, f"/api/galaxies/?survey={SURVEY}&model=g_morph&page_size=1000", args.repeat)
        deep_s, _ = timed(
            client, f"/api/galaxies/?survey={SURVEY}&model=g_morph&ml_pred_min=5&ordering=-ml_g&page_size=100", args.repeat
        )
        objid = Galaxy.objects.filter(survey=survey).values_list("objid", flat=True).first()
        detail_s, _ = timed(client, f"/api/galaxies/{objid}/?survey={SURVEY}", args.repeat)
        cone_s, cone_body = timed(client, "/scs/?RA=150&DEC=0&SR=0.5&VERB=2", args.repeat)
        csv_s, csv_body = timed(client, f"/api/catalogue.csv?survey={SURVEY}&model=g_morph", 3)
        fits_s, _ = timed(client, f"/api/catalogue.fits?survey={SURVEY}&model=g_morph", 3)
        rows = csv_body.count(b"\n") - 1
        print(
            json.dumps(
                {
                    "benchmark": "api",
                    "database": connection.vendor,
                    "galaxies": args.n,
                    "setup_s": round(setup_s, 1),
                    "list_page_1000_ms": round(page_s * 1e3, 1),
                    "filtered_sorted_page_100_ms": round(deep_s * 1e3, 1),
                    "galaxy_detail_ms": round(detail_s * 1e3, 1),
                    "cone_search_0.5deg_ms": round(cone_s * 1e3, 1),
                    "cone_search_rows": cone_body.count(b"<TR>"),
                    "csv_download_rows_per_s": round(rows / csv_s),
                    "fits_download_rows_per_s": round(rows / fits_s),
                    "goal": "pages and cone searches well under a second; whole-catalogue downloads streamed",
                },
                indent=2,
            )
        )
    finally:
        survey.delete()


if __name__ == "__main__":
    main()
