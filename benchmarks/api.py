"""API throughput: catalogue pages, one galaxy, cone searches and streamed downloads.

Creates a survey of ``--n`` galaxies with a model set's predictions (catalogue rows only, no
images; by COPY on PostgreSQL) in the configured database, then times requests through
Django's test client, in this process: the server's own cost, without a network or a WSGI
server in front (``benchmarks/load.py`` adds those). Prints one JSON object, each time the
95th percentile over the repeats; the survey is deleted afterwards unless ``--keep``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/api.py --n 700000
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

from benchmarks.generated_survey import SURVEY, survey_of  # noqa: E402
from catalogue.models import Galaxy  # noqa: E402
from catalogue.serving import prepare_for_requests  # noqa: E402
from pipeline.learning.named_models import CATALOGUE_MODEL  # noqa: E402


def timed(client: Client, url: str, repeat: int) -> tuple[float, bytes]:
    """The 95th percentile of ``repeat`` GETs in seconds (after one unmeasured warm-up) and the last body."""
    times, body = [], b""
    for attempt in range(repeat + 1):
        start = time.perf_counter()
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        if attempt:
            times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code, body[:300])
    return float(np.percentile(times, 95)), body


def catalogue_ml_served() -> bool:
    """Whether this checkout's list carries the catalogue's M/L (the same script times the code before it)."""
    from catalogue.api import serializers

    return hasattr(serializers, "catalogue_ml_object")


def catalogue_choices_stored() -> bool:
    """Whether this checkout stores the catalogue's choice per galaxy (the same script times the code before it)."""
    import importlib.util

    return importlib.util.find_spec("catalogue.services.catalogue_choices") is not None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per query (p95 over them)")
    parser.add_argument("--download-repeat", type=int, default=3, help="timed whole-catalogue downloads per format")
    parser.add_argument("--keep", action="store_true", help="leave the survey in the database for the next run")
    parser.add_argument("--reuse", action="store_true", help="time a survey a --keep run left (of the same --n)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    survey = survey_of(args.n, reuse=args.reuse)
    setup_s = time.perf_counter() - start
    choices_s, choices = None, None
    if connection.vendor == "postgresql" and catalogue_choices_stored():
        # as Celery beat's sweep does a minute after a set is applied (catalogue.services.catalogue_choices),
        # unless a --keep run left them current
        from catalogue.selectors import survey_candidates
        from catalogue.selectors.catalogue_choices import stored_choices_current
        from catalogue.services.catalogue_choices import refresh

        if not stored_choices_current([survey.pk], survey_candidates([survey])):
            start = time.perf_counter()
            choices = refresh(survey)
            choices_s = time.perf_counter() - start
    prepare_for_requests()  # as catalogue/wsgi.py does in each web worker
    client = Client(HTTP_HOST="127.0.0.1")
    try:
        # The default list: each row with the catalogue's M/L (the best-validated model it has the inputs of).
        default_100_s, body = timed(client, f"/api/galaxies/?survey={SURVEY}&page_size=100", args.repeat)
        assert b'"catalogue_ml"' in body or not catalogue_ml_served(), "the default page carries no catalogue_ml"
        default_1000_s, _ = timed(client, f"/api/galaxies/?survey={SURVEY}&page_size=1000", args.repeat)
        page_s, _ = timed(client, f"/api/galaxies/?survey={SURVEY}&model={CATALOGUE_MODEL}&page_size=1000", args.repeat)
        deep_s, _ = timed(
            client,
            f"/api/galaxies/?survey={SURVEY}&model={CATALOGUE_MODEL}&ml_pred_min=5&ordering=-ml_g&page_size=100",
            args.repeat,
        )
        objid = Galaxy.objects.filter(survey=survey).values_list("objid", flat=True).first()
        detail_s, _ = timed(client, f"/api/galaxies/{objid}/?survey={SURVEY}", args.repeat)
        cone_s, cone_body = timed(client, "/scs/?RA=150&DEC=0&SR=0.5&VERB=2", args.repeat)
        csv_s, csv_body = timed(client, f"/api/catalogue.csv?survey={SURVEY}&model={CATALOGUE_MODEL}", args.download_repeat)
        fits_s, _ = timed(client, f"/api/catalogue.fits?survey={SURVEY}&model={CATALOGUE_MODEL}", args.download_repeat)
        rows = csv_body.count(b"\n") - 1
        print(
            json.dumps(
                {
                    "benchmark": "api",
                    "database": connection.vendor,
                    "galaxies": args.n,
                    "setup_s": round(setup_s, 1),
                    "default_page_100_ms": round(default_100_s * 1e3, 1),
                    "default_page_1000_ms": round(default_1000_s * 1e3, 1),
                    "list_page_1000_ms": round(page_s * 1e3, 1),
                    "filtered_sorted_page_100_ms": round(deep_s * 1e3, 1),
                    "galaxy_detail_ms": round(detail_s * 1e3, 1),
                    "cone_search_0.5deg_ms": round(cone_s * 1e3, 1),
                    "cone_search_rows": cone_body.count(b"<TR>"),
                    "catalogue_choices_stored": choices,
                    "catalogue_choices_refresh_s": None if choices_s is None else round(choices_s, 1),
                    "csv_download_rows_per_s": round(rows / csv_s),
                    "fits_download_rows_per_s": round(rows / fits_s),
                    "csv_download_s": round(csv_s, 1),
                    "fits_download_s": round(fits_s, 1),
                    "statistic": f"p95 of {args.repeat} requests ({args.download_repeat} per download), after a warm-up",
                    "goal": "at 700,000: the default 100-row page (with the catalogue's M/L), a filtered sorted 100-row "
                    "page and a 0.5 deg cone < 50 ms, a 1,000-row page < 200 ms, the whole catalogue as CSV or FITS < 15 s",
                },
                indent=2,
            )
        )
    finally:
        if not args.keep:
            survey.delete()


if __name__ == "__main__":
    main()
