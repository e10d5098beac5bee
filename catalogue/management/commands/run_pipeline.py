"""python manage.py run_pipeline --survey NAME --preset test|fast|paper --stages preprocess,cnn,features,gbm,experiments,predict

The one CLI entry to the pipeline. Progress is shown while the run's chunks complete (in-process when
Celery is eager, on the workers otherwise) and a JSON summary is printed at the end.
"""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalogue.models import Run, Survey
from catalogue.services.runs import RunConflict, chunk_failures
from catalogue.services.stages import STAGES, start_stage
from pipeline.presets import PRESETS

UNITS = {"preprocess": "gal", "cnn": "net", "features": "gal", "gbm": "model", "experiments": "exp", "predict": "model"}


class Command(BaseCommand):
    help = "Run pipeline stages on a survey and print a JSON summary."

    def add_arguments(self, parser):
        parser.add_argument("--survey", required=True)
        parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
        parser.add_argument("--stages", default="preprocess", help=f"comma-separated, of: {', '.join(STAGES)}")
        parser.add_argument("--force", action="store_true", help="redo galaxies that are already done")
        parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait for workers")

    def handle(self, *_args, **opts):
        survey = Survey.objects.filter(name=opts["survey"]).first()
        if survey is None:
            raise CommandError(f"no survey named {opts['survey']!r}; ingest it first with ingest_survey")
        stages = [s.strip() for s in opts["stages"].split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise CommandError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
        summary = {"survey": survey.name, "preset": opts["preset"], "stages": {}}
        for stage in stages:
            try:
                run = start_stage(stage, survey, preset_name=opts["preset"], force=opts["force"])
            except (RunConflict, ValueError) as exc:
                raise CommandError(str(exc)) from exc
            run = self._wait(run, opts["timeout"])
            summary["stages"][stage] = {
                "run": run.pk, "status": run.status, "total": run.items_total, "done": run.items_done,
                "failed": run.items_failed, "seconds": run.duration_s, "message": run.message,
                "failures": run.result.get("failures", []), "chunk_failures": chunk_failures(run),
            }  # fmt: skip
            if run.status != Run.Status.SUCCEEDED:
                self.stdout.write(json.dumps(summary, indent=2))
                raise CommandError(f"stage {stage} ended {run.status}: {run.message}")
        self.stdout.write(json.dumps(summary, indent=2))

    def _wait(self, run: Run, timeout: float) -> Run:
        deadline = time.monotonic() + timeout
        unit = UNITS.get(run.stage, "item")
        with tqdm(total=run.items_total, desc=run.stage, unit=unit) as bar:
            while True:
                run.refresh_from_db()
                bar.update(run.items_done + run.items_failed - bar.n)
                bar.set_postfix_str(run.message[:60], refresh=False)
                if run.status in Run.TERMINAL:
                    return run
                if time.monotonic() > deadline:
                    raise CommandError(f"run #{run.pk} not finished after {timeout:.0f} s: {run.message}")
                time.sleep(1.0)
