"""Image store read speed: random batches from a 20,000-galaxy store at 197 px.

Builds a survey of generated galaxies (no images) in the configured database, allocates
their rows, fills the store with random float16 images through ``write_images``, then
reads random batches through ``read_rows`` (the path CNN training takes) and a single row
(the web UI's preview). Prints one JSON object. Run from the repository root:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/array_store.py

``--storage s3`` does the same with the store on object storage (an S3 server of its own on
127.0.0.1: moto's, in memory, so the figures are the format's and the HTTP round trips', not a
network's), and adds CNN training's path there: every row staged locally once, then batches
from the staged copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--resolution", type=int, default=197)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    args = parser.parse_args()

    media = tempfile.mkdtemp(prefix="morphomass-bench-")
    os.environ["MEDIA_ROOT"] = media
    server = None
    if args.storage == "s3":
        from tests.s3_server import S3Server

        server = S3Server()
        os.environ.update(server.environment(server.bucket()))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)

    from catalogue.models import Galaxy, Survey
    from catalogue.services.image_store import allocate_rows, get_or_create_store, read_rows, staged_reader, write_images

    survey = Survey.objects.create(name=f"bench-store-{os.getpid()}")
    try:
        Galaxy.objects.bulk_create(
            [Galaxy(survey=survey, objid=i, ra=0.0, dec=0.0, z=0.05) for i in range(args.n)], batch_size=5000
        )
        ids = list(Galaxy.objects.filter(survey=survey).order_by("id").values_list("id", flat=True))
        store = get_or_create_store(survey, args.resolution)
        t0 = time.perf_counter()
        with transaction.atomic():
            rows = allocate_rows(store, ids)
        allocate_s = time.perf_counter() - t0
        store.refresh_from_db()
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        chunk = 500
        for start in range(0, args.n, chunk):
            part = ids[start : start + chunk]
            images = rng.random((len(part), args.resolution, args.resolution), dtype=np.float32)
            write_images(store, np.array([rows[g] for g in part]), images)
        write_s = time.perf_counter() - t0
        all_rows = np.array([rows[g] for g in ids])
        # The whole file into the page cache (as after a first epoch), then random batches.
        for start in range(0, args.n, 1000):
            read_rows(store, all_rows[start : start + 1000])
        t0 = time.perf_counter()
        for _ in range(args.batches):
            batch = rng.choice(all_rows, size=args.batch, replace=False)
            images = read_rows(store, batch)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for row in rng.choice(all_rows, size=200, replace=False):
            read_rows(store, np.array([row]))
        single_s = (time.perf_counter() - t0) / 200
        staged = {}
        if server is not None:
            t0 = time.perf_counter()
            reader, positions = staged_reader([store], all_rows.reshape(-1, 1))
            stage_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.batches):
                reader(rng.choice(positions, size=args.batch, replace=False))
            staged = {
                "stage_every_row_s": round(stage_s, 1),
                "staged_random_batch_images_per_s": round(args.batch * args.batches / (time.perf_counter() - t0)),
            }
            size_gb = store.capacity * store.resolution**2 * 2 / 1e9
        else:
            size_gb = os.path.getsize(os.path.join(media, store.images_name)) / 1e9
        print(
            json.dumps(
                {
                    "benchmark": "array_store",
                    "database": connection.vendor,
                    "storage": args.storage,
                    "galaxies": args.n,
                    "resolution_px": args.resolution,
                    "store_file_gb": round(size_gb, 3),
                    "allocate_rows_s": round(allocate_s, 2),
                    "write_images_per_s": round(args.n / write_s),
                    "batch_size": args.batch,
                    "batches": args.batches,
                    "random_batch_images_per_s": round(args.batch * args.batches / batch_s),
                    "random_batch_ms": round(1000 * batch_s / args.batches, 2),
                    "single_row_preview_ms": round(1000 * single_s, 3),
                    **staged,
                    "last_batch_shape": list(images.shape),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    "goal": ">= 5000 images/s for random batches of 64 at 197 px from the page cache",
                },
                indent=2,
            )
        )
    finally:
        survey.delete()
        import shutil

        shutil.rmtree(media, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
