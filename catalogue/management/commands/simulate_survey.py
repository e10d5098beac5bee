"""python manage.py simulate_survey OUT_DIR --n 2000 --seed 1 [--workers 2] [--with-faults] [--montage PNG]
[--psf-fwhm ARCSEC] [--pixel-scale ARCSEC] [--sky-noise FACTOR]

The instrument options observe the same galaxies (a seed draws the same population) through
another telescope: another instrument's survey, for applying and adapting a model set.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from catalogue.console import progress_bar
from pipeline.simulate.instrument import SDSS_MEDIAN_PSF_FWHM_ARCSEC, SDSS_PIXEL_SCALE_ARCSEC, Instrument
from pipeline.simulate.montage import write_montage
from pipeline.simulate.survey import simulate_survey


class Command(BaseCommand):
    help = "Write a synthetic SDSS-like survey bundle (images, catalogue, GSWLC, GZ2, stars, truth)."

    def add_arguments(self, parser):
        parser.add_argument("out_dir")
        parser.add_argument("--n", type=int, default=2000, help="number of galaxies")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workers", type=int, default=1, help="rendering processes")
        parser.add_argument("--with-faults", action="store_true", help="add one bad file or row of each kind")
        parser.add_argument("--montage", help="also write a PNG montage of g-band cutouts here")
        parser.add_argument(
            "--psf-fwhm",
            type=float,
            default=SDSS_MEDIAN_PSF_FWHM_ARCSEC,
            metavar="ARCSEC",
            help=f"median g-band PSF FWHM in arcsec (default SDSS's {SDSS_MEDIAN_PSF_FWHM_ARCSEC})",
        )
        parser.add_argument(
            "--pixel-scale",
            type=float,
            default=SDSS_PIXEL_SCALE_ARCSEC,
            metavar="ARCSEC",
            help=f"arcsec per pixel (default SDSS's {SDSS_PIXEL_SCALE_ARCSEC}; DESI Legacy: 0.262)",
        )
        parser.add_argument(
            "--sky-noise",
            type=float,
            default=1.0,
            metavar="FACTOR",
            help="sky noise per unit area as a multiple of the SDSS deep mosaic's (default 1; 3: a shallower survey)",
        )

    def handle(self, *_args, **opts):
        if opts["n"] < 1:
            raise CommandError("--n must be at least 1")
        try:
            instrument = Instrument(opts["pixel_scale"], opts["psf_fwhm"], opts["sky_noise"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        with progress_bar(opts["n"], "render", "galaxies", getattr(self.stderr, "_out", self.stderr)) as bar:
            try:
                summary = simulate_survey(
                    opts["out_dir"],
                    n=opts["n"],
                    seed=opts["seed"],
                    workers=opts["workers"],
                    with_faults=opts["with_faults"],
                    instrument=instrument,
                    progress=lambda done, _total: bar.update(done - bar.n),
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        if opts["montage"]:
            write_montage(opts["out_dir"], opts["montage"])
        self.stdout.write(json.dumps(asdict(summary), indent=2))
