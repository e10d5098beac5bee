"""python manage.py ingest_survey BUNDLE_DIR [--name NAME] [--report REPORT.json]"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalogue.console import progress_bar
from catalogue.services.ingest import ingest_bundle, write_report
from pipeline.bundles.reader import BundleError


class Command(BaseCommand):
    help = "Ingest a survey bundle; bad rows and files are reported, never fatal."

    def add_arguments(self, parser):
        parser.add_argument("bundle", help="bundle directory with catalogue.csv and images/")
        parser.add_argument("--name", help="survey name (default: the directory name)")
        parser.add_argument("--report", help="write the full JSON report here")
        parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
        parser.add_argument("--catalogue-only", action="store_true", help="ingest the catalogue without images")

    def handle(self, *_args, **opts):
        if opts["report"]:
            check_writable(Path(opts["report"]))
        bars: dict[str, object] = {}
        out = getattr(self.stderr, "_out", self.stderr)

        def progress(stage: str, done: int, total: int) -> None:
            unit = "images" if stage == "store images" else "galaxies"
            bar = bars.get(stage) or bars.setdefault(stage, progress_bar(total, stage, unit, out, leave=False))
            bar.update(done - bar.n)

        try:
            report = ingest_bundle(
                opts["bundle"],
                opts["name"],
                split_seed=opts["split_seed"],
                with_images=not opts["catalogue_only"],
                progress=progress,
            )
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for bar in bars.values():
                bar.close()
        if opts["report"]:
            write_report(report, opts["report"])
        self.stdout.write(report.summary())


def check_writable(path: Path) -> None:
    """Refuse, before anything is ingested, a report path that could not be written."""
    if path.is_dir():
        raise CommandError(f"--report {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CommandError(f"--report {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CommandError(f"--report {path} is not writable")
