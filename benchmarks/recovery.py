"""Recovery from a killed worker under the default liveness settings, as production runs it.

Simulates and ingests a small survey, takes it through preprocess, cnn and features in this
process, then starts a real cpu worker and celery beat (the reaper every minute) with the
*default* heartbeat (30 s) and silence limit (180 s), starts ``--stage`` on the worker,
SIGKILLs the worker mid-stage, starts a fresh one at once and times how long the stage
takes to finish. Prints one JSON object; the survey is deleted afterwards.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test CELERY_BROKER_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python benchmarks/recovery.py --stage gbm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
MEDIA = Path(tempfile.mkdtemp(prefix="morphomass-recovery-"))
os.environ["MEDIA_ROOT"] = str(MEDIA)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from catalogue import limits, registry  # noqa: E402
from catalogue.celery import app  # noqa: E402
from catalogue.models import Run, RunChunk, Survey  # noqa: E402
from catalogue.orchestration.start import start  # noqa: E402
from catalogue.services.ingest import ingest_bundle  # noqa: E402
from pipeline.simulate.survey import simulate_survey  # noqa: E402

SURVEY = "bench-recovery"
#: Each step of the stage slowed (reporting nothing), so that the kill lands inside it.
SLOW_STEP_S = 20.0
SLOW_GALAXY_S = 0.3


def _process(*args: str, env: dict) -> subprocess.Popen:
    celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
    return subprocess.Popen([celery, "-A", "catalogue", *args], cwd=ROOT, env=env, start_new_session=True)


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="gbm", choices=list(registry.stage_names()))
    parser.add_argument("--n", type=int, default=150, help="galaxies of the simulated survey")
    args = parser.parse_args()
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        sys.exit("set CELERY_BROKER_URL to a Redis URL: the benchmark runs real workers")

    call_command("migrate", verbosity=0)
    Survey.objects.filter(name=SURVEY).delete()
    bundle = MEDIA / "bundle"
    simulate_survey(bundle, n=args.n, seed=11)
    ingest_bundle(bundle, SURVEY)
    survey = Survey.objects.get(name=SURVEY)
    names = registry.stage_names()
    before = list(names[: names.index(args.stage)])
    if before:  # the stages it needs, done in this process
        app.conf.task_always_eager = True
        start(survey, before, preset_name="test")
    app.conf.task_always_eager = False  # the stage itself goes to the worker
    app.control.purge()

    env = {**os.environ, "CELERY_TASK_ALWAYS_EAGER": "0", "PYTHONPATH": str(ROOT)}
    # Slow enough that the kill lands mid-stage: each step of a stage, or each galaxy of preprocess.
    faults = {"delay_s": SLOW_GALAXY_S} if args.stage == "preprocess" else {"slow_steps": {args.stage: SLOW_STEP_S}}
    slow = {**env, "MORPHOMASS_FAULTS": json.dumps(faults)}
    queue = registry.stage(args.stage).queue
    worker = _process("worker", "-Q", queue, "--pool", "solo", "--loglevel", "WARNING", "--without-gossip", env=slow)
    beat_dir = Path(tempfile.mkdtemp(prefix="morphomass-beat-"))
    beat = _process("beat", "--loglevel", "WARNING", "--schedule", str(beat_dir / "schedule"), env=env)
    reaper = None if queue == registry.CPU_QUEUE else _process("worker", "-Q", "cpu", "--pool", "solo", env=env)
    try:
        run = start(survey, [args.stage], preset_name="test")
        while not RunChunk.objects.filter(run=run, state="running").exists():
            time.sleep(0.2)
        time.sleep(2.0)
        _kill(worker)
        killed = time.monotonic()
        worker = _process("worker", "-Q", queue, "--pool", "solo", "--loglevel", "WARNING", "--without-gossip", env=env)
        handed_out = None
        while True:
            run.refresh_from_db()
            chunk = run.chunks.order_by("index").first()
            if handed_out is None and chunk.attempts >= 2:
                handed_out = time.monotonic() - killed
            if run.status in Run.TERMINAL:
                break
            time.sleep(1.0)
        print(
            json.dumps(
                {
                    "stage": args.stage,
                    "status": run.status,
                    "heartbeat_s": limits.heartbeat_s(),
                    "heartbeat_silence_s": limits.heartbeat_silence_s(),
                    "reaper_interval_s": app.conf.beat_schedule["reap-stale-runs"]["schedule"],
                    "kill_to_new_worker_claim_s": None if handed_out is None else round(handed_out, 1),
                    "kill_to_stage_done_s": round(time.monotonic() - killed, 1),
                    "injected_slowness": faults,
                }
            )
        )
    finally:
        for proc in (worker, beat, reaper):
            if proc is not None:
                _kill(proc, signal.SIGTERM)
        app.control.purge()
        Survey.objects.filter(name=SURVEY).delete()
        shutil.rmtree(MEDIA, ignore_errors=True)
        shutil.rmtree(beat_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
