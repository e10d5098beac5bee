"""Feature storage: store and load 100,000 galaxies x 2,196 float32 CNN features on PostgreSQL.

Stores the vectors the way the features stage does (bulk upserts of float32 bytes, one
row per galaxy and feature set: 37 + 2048 + 37 + 37 + 37 features), then loads the whole
matrix with ``catalogue.selectors.feature_matrix`` in a fresh process and reports its time
and peak memory against the matrix's own size. Prints one JSON object:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/features.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
WIDTHS = {"cnn1.gz2": 37, "cnn1.pool": 2048, "cnn2.gz2": 37, "cnn3.gz2": 37, "cnn4.gz2_logits": 37}


def status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. ru_maxrss would not do: after fork and
    exec, Linux keeps the parent's peak in it (here the store phase's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load(survey_name: str) -> dict:
    """In a fresh process: time and peak memory of loading the matrix."""
    import django

    django.setup()
    from catalogue.models import FeatureSet, Galaxy
    from catalogue.selectors import feature_matrix

    sets = list(FeatureSet.objects.filter(survey__name=survey_name).order_by("id"))
    ids = list(Galaxy.objects.filter(survey__name=survey_name).order_by("id").values_list("id", flat=True))
    before = status_mb("VmRSS")
    start = time.perf_counter()
    matrix, names = feature_matrix(sets, ids, drop=False)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    return {
        "load_s": round(seconds, 2),
        "shape": list(matrix.shape),
        "matrix_mb": round(matrix.nbytes / 2**20),
        "peak_extra_mb": round(peak - before),
        "peak_over_matrix": round((peak - before) / (matrix.nbytes / 2**20), 2),
        "nan": int(np.isnan(matrix).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--load-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        print(json.dumps(load(args.load_only)))
        return
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from catalogue.models import FeatureSet, FeatureVector, Galaxy, Survey

    call_command("migrate", verbosity=0)
    name = f"bench-features-{os.getpid()}"
    survey = Survey.objects.create(name=name)
    try:
        galaxies = [Galaxy(survey=survey, objid=i, ra=0.0, dec=0.0, z=0.05) for i in range(args.n)]
        Galaxy.objects.bulk_create(galaxies, batch_size=10000)
        ids = list(Galaxy.objects.filter(survey=survey).order_by("id").values_list("id", flat=True))
        sets = [
            FeatureSet.objects.create(name=n, survey=survey, feature_names=[f"{n}_{i}" for i in range(w)])
            for n, w in WIDTHS.items()
        ]
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for first in range(0, args.n, 2000):
            block = ids[first : first + 2000]
            with transaction.atomic():
                for feature_set in sets:
                    values = rng.random((len(block), len(feature_set.feature_names)), dtype=np.float32)
                    pairs = zip(block, values, strict=True)
                    rows = [FeatureVector(galaxy_id=g, feature_set=feature_set, values=v) for g, v in pairs]
                    FeatureVector.objects.bulk_create(
                        rows,
                        batch_size=2000,
                        update_conflicts=True,
                        unique_fields=["galaxy", "feature_set"],
                        update_fields=["values"],
                    )
        store_s = time.perf_counter() - start
        command = [sys.executable, __file__, "--load-only", name]
        child = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
        loaded = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    "benchmark": "features",
                    "database": connection.vendor,
                    "galaxies": args.n,
                    "features": sum(WIDTHS.values()),
                    "store_s": round(store_s, 1),
                    "store_rows_per_s": round(args.n * len(sets) / store_s),
                    **loaded,
                    "goal": "load in <= 15 s with peak memory under twice the matrix",
                },
                indent=2,
            )
        )
    finally:
        survey.delete()


if __name__ == "__main__":
    main()
