"""Ingest throughput: a generated 100 000-row catalogue (no images) into the configured database.

Writes the catalogue to a temporary bundle, ingests it with ``--catalogue-only`` semantics
and prints rows per second as JSON. Set DATABASE_URL for PostgreSQL; the survey it
creates is deleted afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from catalogue.models import Survey  # noqa: E402
from catalogue.services.ingest import ingest_bundle  # noqa: E402


def write_catalogue(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    columns = ["objid", "ra", "dec", "z", "d25_arcmin", "mag_g", "magerr_g", "mag_i", "magerr_i", "ml_g", "ml_g_err", "chi2_r"]
    data = {
        "objid": 1237600000000000000 + np.arange(n) * 3,
        "ra": rng.uniform(0, 360, n),
        "dec": np.rad2deg(np.arcsin(rng.uniform(-0.2, 0.9, n))),
        "z": rng.uniform(0.01, 0.3, n),
        "d25_arcmin": rng.lognormal(np.log(0.6), 0.3, n),
        "mag_g": rng.uniform(13, 18, n),
        "magerr_g": rng.uniform(0.01, 0.05, n),
        "mag_i": rng.uniform(12, 17, n),
        "magerr_i": rng.uniform(0.01, 0.05, n),
        "ml_g": rng.lognormal(1.0, 0.5, n),
        "ml_g_err": rng.uniform(0.1, 0.5, n),
        "chi2_r": rng.lognormal(0, 0.5, n),
    }
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*(data[c].tolist() for c in columns), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bench-ingest"
        bundle.mkdir()
        write_catalogue(bundle / "catalogue.csv", args.n)
        Survey.objects.filter(name="bench-ingest").delete()
        start = time.perf_counter()
        report = ingest_bundle(bundle, with_images=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        ingest_bundle(bundle, with_images=False)  # re-ingest: every row is an update
        again = time.perf_counter() - start
        Survey.objects.filter(name="bench-ingest").delete()
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "database": connection.vendor,
                "rows": args.n,
                "seconds": round(first, 2),
                "rows_per_second": round(args.n / first),
                "reingest_seconds": round(again, 2),
                "reingest_rows_per_second": round(args.n / again),
                "accepted": report.accepted,
                "excluded": report.excluded,
                "rejected": report.rejected,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
