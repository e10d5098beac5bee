"""The same workflow on local disk and on object storage: seconds per stage, with real workers.

Simulates a survey of ``--n`` galaxies once, then for each storage ingests it, starts a cpu and a
gpu worker (Redis as the broker, the configured PostgreSQL) and runs the ``--preset`` workflow up
to the model set (preprocess, cnn, features, gbm). Local disk: the workers share this process's
MEDIA_ROOT; S3: every file in a bucket of an S3 server of its own on 127.0.0.1 (moto's, in memory:
HTTP's and the format's cost, not a network's). Prints one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python benchmarks/storage_workflow.py --n 200
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
STAGES = ("preprocess", "cnn", "features", "gbm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--preset", default="test")
    args = parser.parse_args()
    media = Path(tempfile.mkdtemp(prefix="morphomass-bench-media-"))
    os.environ["MEDIA_ROOT"] = str(media)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import override_settings

    from catalogue.celery import app
    from catalogue.models import Run, Survey
    from catalogue.services.ingest import ingest_bundle
    from pipeline.simulate.survey import simulate_survey
    from tests.conftest import WorkerProcess
    from tests.s3_server import S3Server

    call_command("migrate", verbosity=0)
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = broker
    app.conf.result_backend = broker
    app.conf.task_always_eager = False
    bundle = Path(tempfile.mkdtemp(prefix="morphomass-bench-bundle-")) / "bundle"
    simulate_survey(bundle, n=args.n, seed=3, workers=2)
    server = S3Server()
    bucket = server.bucket()
    results = {}
    stdout = os.dup(1)
    os.dup2(2, 1)  # the workers inherit stdout: their banners go to stderr, the JSON alone to stdout
    try:
        for storage in ("local", "s3"):
            storages = server.storages_setting(bucket) if storage == "s3" else None
            worker_env = {
                **os.environ,
                "CELERY_BROKER_URL": broker,
                "CELERY_RESULT_BACKEND": broker,
                "CELERY_TASK_ALWAYS_EAGER": "0",
                "PYTHONPATH": str(ROOT),
                "MEDIA_ROOT": str(media),
                **(server.environment(bucket) if storage == "s3" else {"MORPHOMASS_STORAGE": "local"}),
            }
            with override_settings(**({"STORAGES": storages} if storages else {})):
                name = f"bench-storage-{storage}-{os.getpid()}"
                app.control.purge()
                workers = [WorkerProcess(app, queue, worker_env).start() for queue in ("cpu", "gpu")]
                try:
                    started = time.perf_counter()
                    ingest_bundle(bundle, name)
                    ingest_s = time.perf_counter() - started
                    out = io.StringIO()
                    call_command(
                        "run_pipeline", "--survey", name, "--preset", args.preset, "--stages", ",".join(STAGES),
                        "--timeout", "3600", stdout=out, stderr=io.StringIO(),
                    )  # fmt: skip
                    workflow = Run.objects.get(survey__name=name, stage="workflow")
                    stages = {r.stage: (r.finished - r.started).total_seconds() for r in workflow.children.all()}
                    results[storage] = {
                        "ingest_s": round(ingest_s, 1),
                        "workflow_s": round((workflow.finished - workflow.started).total_seconds(), 1),
                        **{f"{stage}_s": round(stages[stage], 1) for stage in STAGES},
                    }
                finally:
                    for worker in workers:
                        worker.stop()
                    Survey.objects.filter(name=name).delete()
        objects = len(server.keys(bucket))
    finally:
        server.stop()
        os.dup2(stdout, 1)
    print(
        json.dumps(
            {
                "benchmark": "storage_workflow",
                "galaxies": args.n,
                "preset": args.preset,
                "stages": list(STAGES),
                "workers": "one cpu, one gpu (solo pools)",
                **results,
                "objects_left_in_the_bucket_after_deleting_the_survey": objects,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
