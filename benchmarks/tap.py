"""TAP on a GSWLC-sized catalogue: sync cone and join latency, and streaming a whole table as VOTable.

Creates (or with ``--reuse``, reuses) a survey of ``--n`` generated galaxies with one model
set's predictions (benchmarks/generated_survey.py), then times ADQL through /tap/sync with
Django's test client, in this process (no network): p50 and p95 of a 0.5 deg cone
(CONTAINS), a cone joined with the predictions and filtered on M/L, a DISTANCE-sorted
cone, a count per morphology class over the whole catalogue; then the time and peak memory
of streaming every galaxy with its current prediction as one VOTable; then an UPLOAD crossmatch:
``--upload`` positions (half within an arcsec of catalogue galaxies, half anywhere in the
footprint) matched within 2 arcsec against the whole catalogue, uploaded as a VOTable with
each request. Prints one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/tap.py --n 700000 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
os.environ.setdefault("API_ANON_RATE", "1000000/minute")
os.environ.setdefault("TAP_SYNC_TIMEOUT_S", "600")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from benchmarks.generated_survey import survey_of  # noqa: E402
from catalogue.serving import prepare_for_requests  # noqa: E402

QUERIES = {
    "cone_0.5deg": "SELECT g.objid, g.ra, g.dec, g.z FROM morphomass.galaxies AS g "
    "WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', 150, 0, 0.5))",
    "cone_join_predictions": "SELECT g.objid, g.ra, g.dec, p.model_name, p.ml_pred, p.ml_lo68, p.ml_hi68 "
    "FROM morphomass.galaxies AS g JOIN morphomass.predictions AS p ON p.galaxy_id = g.galaxy_id "
    "WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', 150, 0, 0.5)) AND p.ml_pred > 2",
    "cone_current_by_distance": "SELECT TOP 100 c.objid, c.ml_pred, c.mstar_pred, "
    "DISTANCE(POINT(c.ra, c.dec), POINT(150, 0)) AS dist FROM morphomass.catalogue AS c "
    "WHERE DISTANCE(POINT(c.ra, c.dec), POINT(150, 0)) < 0.5 ORDER BY dist",
    "count_per_class_all": "SELECT morphology, COUNT(*) AS n, AVG(ml_g) AS mean_ml FROM morphomass.galaxies GROUP BY morphology",
}
STREAM = (
    "SELECT objid, ra, dec, z, lum_g, ml_g, model_set, ml_pred, ml_lo68, ml_hi68, mstar_pred, out_of_support"
    " FROM morphomass.catalogue"
)


def run(client: Client, adql: str, maxrec: int) -> tuple[float, int, int]:
    """Seconds, rows and bytes of one sync query, read piece by piece as a client would stream it."""
    start = time.perf_counter()
    response = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": adql, "MAXREC": maxrec})
    rows, size, last = 0, 0, b""
    for piece in response.streaming_content if response.streaming else [response.content]:
        rows, size, last = rows + piece.count(b"<TR>"), size + len(piece), piece
    elapsed = time.perf_counter() - start
    assert response.status_code == 200 and b'value="ERROR"' not in last, last[-500:]
    return elapsed, rows, size


CROSSMATCH = (
    "SELECT u.id, c.objid, c.ml_pred, c.ml_lo68, c.ml_hi68, c.mstar_pred,"
    " DISTANCE(POINT('ICRS', u.ra, u.dec), POINT('ICRS', c.ra, c.dec)) * 3600 AS sep_arcsec"
    " FROM TAP_UPLOAD.mine AS u JOIN morphomass.catalogue AS c"
    " ON 1 = CONTAINS(POINT('ICRS', c.ra, c.dec), CIRCLE('ICRS', u.ra, u.dec, 2.0 / 3600))"
)


def upload_crossmatch(client: Client, survey, n: int, repeat: int) -> dict:
    """p50 and p95 of a sync UPLOAD crossmatch of ``n`` positions within 2 arcsec (the upload sent each time)."""
    import io

    from astropy.table import Table

    rng = np.random.default_rng(4)
    galaxies = np.array(survey.galaxies.order_by("?").values_list("ra", "dec")[: n // 2], dtype=float)
    offset = rng.uniform(-0.7 / 3600, 0.7 / 3600, (len(galaxies), 2))  # within an arcsec
    near = galaxies + offset * np.column_stack([1 / np.cos(np.radians(galaxies[:, 1])), np.ones(len(galaxies))])
    anywhere = np.column_stack([rng.uniform(140, 160, n - len(near)), rng.uniform(-5, 5, n - len(near))])
    positions = np.vstack([near, anywhere])
    table = Table({"id": np.arange(len(positions)), "ra": positions[:, 0], "dec": positions[:, 1]})
    buffer = io.BytesIO()
    table.write(buffer, format="votable")
    data = buffer.getvalue()
    times, rows = [], 0
    for attempt in range(repeat + 1):
        start = time.perf_counter()
        form = {"LANG": "ADQL", "QUERY": CROSSMATCH, "MAXREC": 10 * n, "UPLOAD": "mine,param:t", "t": io.BytesIO(data)}
        response = client.post("/tap/sync", form)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200 and b'value="ERROR"' not in body[-2000:], body[-800:]
        if attempt:
            times.append(time.perf_counter() - start)
        rows = body.count(b"<TR>")
    return {
        "positions": n,
        "radius_arcsec": 2.0,
        "upload_bytes": len(data),
        "rows": rows,
        "p50_ms": round(float(np.percentile(times, 50)) * 1e3, 1),
        "p95_ms": round(float(np.percentile(times, 95)) * 1e3, 1),
        "goal": "p50 within 2 s at 10,000 positions against 700,000 galaxies",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per query")
    parser.add_argument("--keep", action="store_true", help="leave the survey in the database for the next run")
    parser.add_argument("--reuse", action="store_true", help="time a survey a --keep run left (of the same --n)")
    parser.add_argument("--upload", type=int, default=10_000, help="positions in the UPLOAD crossmatch")
    parser.add_argument("--upload-repeat", type=int, default=10, help="timed UPLOAD crossmatches")
    parser.add_argument("--only-upload", action="store_true", help="time the UPLOAD crossmatch alone")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    survey = survey_of(args.n, reuse=args.reuse)
    setup_s = time.perf_counter() - start
    prepare_for_requests()
    client = Client(HTTP_HOST="127.0.0.1")
    report: dict = {"benchmark": "tap", "database": connection.vendor, "galaxies": args.n, "setup_s": round(setup_s, 1)}
    try:
        report["upload_crossmatch"] = upload_crossmatch(client, survey, args.upload, args.upload_repeat)
        for name, adql in {} if args.only_upload else QUERIES.items():
            run(client, adql, 100_000)  # warm-up
            times, rows = [], 0
            for _ in range(args.repeat):
                elapsed, rows, _ = run(client, adql, 100_000)
                times.append(elapsed)
            report[f"{name}_ms"] = {
                "p50": round(float(np.percentile(times, 50)) * 1e3, 1),
                "p95": round(float(np.percentile(times, 95)) * 1e3, 1),
                "rows": rows,
            }
        if args.only_upload:
            print(json.dumps(report, indent=2))
            return
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        elapsed, rows, size = run(client, STREAM, args.n)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report["stream_votable"] = {
            "rows": rows,
            "s": round(elapsed, 1),
            "rows_per_s": round(rows / elapsed),
            "mb": round(size / 1e6, 1),
            "peak_rss_growth_mb": round((peak - before) / 1024, 1),
        }
        report["statistic"] = f"p50 and p95 of {args.repeat} requests after a warm-up; Django's test client, no network"
        report["goal"] = "at 700,000 galaxies: a cone query well under 1 s"
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            survey.delete()


if __name__ == "__main__":
    main()
