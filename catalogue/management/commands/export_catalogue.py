"""python manage.py export_catalogue [--survey NAME [--model NAME]] --format csv|ecsv|fits|votable|parquet OUT"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from catalogue.models import Survey
from catalogue.services.export import FORMATS, export_catalogue
from pipeline.learning.named_models import CATALOGUE_MODEL


class Command(BaseCommand):
    help = "Write the galaxy table: plain CSV, or ECSV, FITS, VOTable or Parquet with units and descriptions."

    def add_arguments(self, parser):
        parser.add_argument("out", help="output file")
        parser.add_argument("--format", choices=sorted(FORMATS), required=True)
        parser.add_argument("--survey", help="only this survey (default: all)")
        parser.add_argument(
            "--model", help=f"add the predictions of the model of this name, e.g. {CATALOGUE_MODEL} (of the set applied last)"
        )
        parser.add_argument(
            "--models",
            metavar="SET",
            help="the model set whose predictions to add: survey@run, or a training survey's name (its current set)",
        )

    def handle(self, *_args, **opts):
        survey = None
        if opts["survey"]:
            survey = Survey.objects.filter(name=opts["survey"]).first()
            if survey is None:
                raise CommandError(f"no survey named {opts['survey']!r}")
        try:
            n = export_catalogue(opts["out"], opts["format"], survey, opts["model"], opts["models"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"wrote {n} galaxies to {opts['out']} ({opts['format']})")
