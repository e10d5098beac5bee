"""A prediction job end to end: galaxies per second from submit to results, beside applying the set to a survey.

Simulates a sample of ``--n`` galaxies (a seed no training survey used), packs its cutouts
into a zip with a CSV table, submits it to ``POST /api/predict/jobs/`` as a signed-in user,
waits for COMPLETED and downloads the results as FITS; then, for the same machine's baseline,
ingests the same bundle as a survey and applies the same set to it (``run_pipeline --survey
NEW --models SET``, the path a job reuses). Prints one JSON object: seconds to answer the
submit, from submit to COMPLETED, for the results download, galaxies per second end to end,
and the baseline's seconds and rate.

``--workers`` runs the job on a real cpu and a real gpu worker (Redis at ``CELERY_BROKER_URL``)
started here; without it everything runs in this process, as the embedded demo does. With
no ``--models``, a ``fast`` set is trained first on ``--train`` simulated galaxies.

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python benchmarks/prediction_jobs.py --n 1000 --workers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from catalogue.celery import app  # noqa: E402
from catalogue.models import ModelSet, PredictionJob, Run, Survey  # noqa: E402
from catalogue.orchestration.prediction_jobs import refresh  # noqa: E402
from catalogue.orchestration.start import start  # noqa: E402
from catalogue.selectors import resolve_model_set  # noqa: E402
from catalogue.services import prediction_jobs as job_files  # noqa: E402
from catalogue.services.ingest import ingest_bundle  # noqa: E402
from pipeline.simulate.survey import simulate_survey  # noqa: E402
from tests.bundle_helpers import ordinary_objids, sample_archive, sample_table  # noqa: E402

SAMPLE_SEED = 4242
#: Galaxies of the job that warms the workers before the timed one.
WARM_UP = 20


def train_fast_set(n: int, tmp: Path) -> ModelSet:
    bundle = tmp / "training"
    simulate_survey(bundle, n=n, seed=7, workers=2)
    name = f"bench-jobs-train-{n}"
    ingest_bundle(bundle, name)
    workflow = start(Survey.objects.get(name=name), preset_name="fast")
    if workflow.status != "succeeded":
        raise SystemExit(f"training failed: {workflow.message}")
    return resolve_model_set(name)


def start_workers() -> list[subprocess.Popen]:
    env = {**os.environ, "CELERY_TASK_ALWAYS_EAGER": "0", "MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    celery = str(Path(sys.executable).parent / "celery")
    procs = []
    for queue in ("cpu", "gpu"):
        name = f"bench-{queue}-{uuid.uuid4().hex[:6]}@x"
        command = [celery, "-A", "catalogue", "worker", "-Q", queue, "--pool", "solo", "--hostname", name, "-l", "WARNING"]
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(app.control.ping(timeout=1.0) or []) < 2:
        time.sleep(0.5)
    return procs


def submit(client: APIClient, archive: Path, table: Path, model_set: str) -> str:
    with open(archive, "rb") as sample_file, open(table, "rb") as table_file:
        answer = client.post("/api/predict/jobs/", {"sample": sample_file, "table": table_file, "models": model_set})
    if answer.status_code != 201:
        raise SystemExit(f"submit refused: {answer.status_code} {answer.content[:300]!r}")
    return answer.json()["id"]


def wait(job_id: str) -> PredictionJob:
    while (job := refresh(PredictionJob.objects.get(pk=job_id))).phase in PredictionJob.ACTIVE:
        time.sleep(0.5)
    return job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="galaxies in the sample")
    parser.add_argument("--models", default="", help="model set (survey@run or a training survey's name)")
    parser.add_argument("--train", type=int, default=1000, help="galaxies to train a fast set on when --models is not given")
    parser.add_argument("--workers", action="store_true", help="run on a real cpu and gpu worker (Redis broker)")
    parser.add_argument("--keep", action="store_true", help="keep the job and the baseline survey")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    app.conf.task_always_eager = True  # training, simulating and packing run here
    model_set = resolve_model_set(args.models) if args.models else train_fast_set(args.train, tmp)

    bundle = tmp / "sample"
    simulate_survey(bundle, n=args.n, seed=SAMPLE_SEED, workers=2)
    objids = ordinary_objids(bundle, args.n)
    archive = sample_archive(bundle, objids, tmp / "sample.zip")
    table = sample_table(bundle, objids, tmp / "sample.csv")
    user, _ = User.objects.get_or_create(username="benchmark-jobs")
    client = APIClient(HTTP_HOST="127.0.0.1")
    client.force_authenticate(user)

    procs: list[subprocess.Popen] = []
    app.conf.task_always_eager = not args.workers
    if args.workers:
        procs = start_workers()
    try:
        # warm the workers first (imports, the networks loaded once per process), as a deployment's are
        warm = (
            sample_archive(bundle, objids[:WARM_UP], tmp / "warm.zip"),
            sample_table(bundle, objids[:WARM_UP], tmp / "warm.csv"),
        )
        warm_id = submit(client, *warm, model_set.name)
        wait(warm_id)
        began = time.perf_counter()
        with open(archive, "rb") as sample_file, open(table, "rb") as table_file:
            answer = client.post(
                "/api/predict/jobs/", {"sample": sample_file, "table": table_file, "models": model_set.name}, format="multipart"
            )
        answered = time.perf_counter() - began
        if answer.status_code != 201:
            raise SystemExit(f"submit refused: {answer.status_code} {answer.content[:300]!r}")
        job_id = answer.json()["id"]
        job = wait(job_id)
        completed = time.perf_counter() - began
        if job.phase != PredictionJob.Phase.COMPLETED:
            raise SystemExit(f"job ended {job.phase}: {job.error}")
        got = time.perf_counter()
        results = client.get(f"/api/predict/jobs/{job_id}/results.fits")
        download = time.perf_counter() - got

        # the baseline: the same bundle ingested as a survey and the same set applied to it, the same way
        baseline_name = f"bench-jobs-apply-{uuid.uuid4().hex[:6]}"
        began = time.perf_counter()
        ingest_bundle(bundle, baseline_name)
        applied = start(Survey.objects.get(name=baseline_name), model_set=model_set)
        while applied.status in Run.ACTIVE:
            time.sleep(0.5)
            applied.refresh_from_db()
        baseline = time.perf_counter() - began
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        app.conf.task_always_eager = True

    counts = {"galaxies": job.n_rows, "results_bytes": len(results.content)}
    report = {
        "benchmark": "prediction_jobs",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model_set": model_set.name,
        "preset": model_set.preset,
        "galaxies": args.n,
        "on": "a real cpu and gpu worker (Redis)" if args.workers else "in-process (eager Celery)",
        "submit_answer_s": round(answered, 2),
        "submit_to_completed_s": round(completed, 1),
        "results_fits_download_s": round(download, 2),
        "galaxies_per_s": round(args.n / completed, 1),
        "prepare_s": round((job.workflow.created - job.started).total_seconds(), 1),
        "stages_s": {
            run.stage: round((run.finished - run.started).total_seconds(), 1)
            for run in job.workflow.children.all()
            if run.started and run.finished
        },
        "baseline_apply_to_ingested_survey_s": round(baseline, 1),
        "baseline_galaxies_per_s": round(args.n / baseline, 1),
        "baseline_status": applied.status,
        **counts,
    }
    job_files.delete(PredictionJob.objects.get(pk=warm_id))
    if not args.keep:
        job_files.delete(PredictionJob.objects.get(pk=job_id))
        Survey.objects.filter(name=baseline_name).delete()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
