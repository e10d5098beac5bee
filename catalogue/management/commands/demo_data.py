"""python manage.py demo_data --out DIR --n N: simulate, ingest and preprocess a demo survey.

What ``make demo`` runs before serving: every step is the same code path a real survey
takes (simulate_survey writes a bundle, ingest_survey loads it, run_pipeline preprocesses
it). Steps already done are skipped, so a second ``make demo`` starts at once.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand

from catalogue.models import Preprocessed, Survey

DEMO_SURVEY = "demo"


class Command(BaseCommand):
    help = "Prepare the demo survey: simulate -> ingest -> preprocess (skips what is done)."

    def add_arguments(self, parser):
        parser.add_argument("--out", default="var/demo-survey")
        parser.add_argument("--n", type=int, default=120)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workers", type=int, default=2)

    def handle(self, *_args, **opts):
        out = Path(opts["out"])
        if not (out / "catalogue.csv").exists():
            self.stdout.write(f"simulating {opts['n']} galaxies into {out} ...")
            call_command(
                "simulate_survey", str(out), n=opts["n"], seed=opts["seed"], workers=opts["workers"],
                with_faults=True, montage=str(out / "montage.png"),
            )  # fmt: skip
        if not Survey.objects.filter(name=DEMO_SURVEY).exists():
            call_command("ingest_survey", str(out), name=DEMO_SURVEY)
        if not Preprocessed.objects.filter(galaxy__survey__name=DEMO_SURVEY).exists():
            call_command("run_pipeline", survey=DEMO_SURVEY, preset="fast", stages="preprocess")
        self.stdout.write(self.style.SUCCESS(f"demo survey {DEMO_SURVEY!r} is ready"))
