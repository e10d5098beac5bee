"""python manage.py demo_data --out DIR --n N: simulate, ingest and take a demo survey through every stage.

What ``make demo`` runs before serving: every step is the same code path a real survey
takes (simulate_survey writes a bundle, ingest_survey loads it, run_pipeline runs the
``fast`` preset's stages as one workflow: preprocess, cnn, features, gbm, experiments,
predict). What is done is kept (the bundle, the survey, each stage that succeeded with the
same inputs), so a second ``make demo`` starts at once and an interrupted one continues. An admin account is
created once; its password is kept in ``var/demo-admin.txt`` and printed every time.
"""

from __future__ import annotations

import io
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand

from catalogue.selectors import survey_named
from pipeline.simulate.survey import FAULT_KINDS

DEMO_SURVEY = "demo"


class Command(BaseCommand):
    help = "Prepare the demo survey: simulate -> ingest -> every stage (keeps what is done)."

    def add_arguments(self, parser):
        parser.add_argument("--out", default="var/demo-survey")
        parser.add_argument("--n", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--preset", default="fast")
        parser.add_argument("--stages", default=None, help="stages to take the survey through (default: every stage)")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="where the demo will be served (for the login line)")

    def handle(self, *_args, **opts):
        out = Path(opts["out"])
        if not (out / "catalogue.csv").exists():
            self.stdout.write(
                f"simulating {opts['n']} galaxies into {out}. On purpose, {len(FAULT_KINDS)} of its lines and files are "
                f"broken, one of each kind a real survey has ({', '.join(k.replace('_', ' ') for k in FAULT_KINDS)}): "
                "the ingest and the preprocess stage report them below as problems and failed galaxies."
            )
            call_command(
                "simulate_survey",
                str(out),
                n=opts["n"],
                seed=opts["seed"],
                workers=opts["workers"],
                with_faults=True,
                montage=str(out / "montage.png"),
                stdout=io.StringIO(),
            )
        if survey_named(DEMO_SURVEY) is None:
            call_command("ingest_survey", str(out), name=DEMO_SURVEY)
        # One workflow; stages already done with the same inputs are reused, so a second demo starts at once.
        call_command("run_pipeline", survey=DEMO_SURVEY, preset=opts["preset"], stages=opts["stages"])
        self.stdout.write(self.style.SUCCESS(f"demo survey {DEMO_SURVEY!r} is ready"))
        self.stdout.write(f"admin: user 'admin', password '{demo_admin_password()}' ({opts['url'].rstrip('/')}/admin/)")


def demo_admin_password() -> str:
    """The demo admin's password, created with the account on first use."""
    import secrets

    from django.conf import settings
    from django.contrib.auth.models import User

    keep = Path(settings.VAR_DIR) / "demo-admin.txt"
    user = User.objects.filter(username="admin").first()
    if user is not None and keep.exists():
        return keep.read_text().strip()
    password = secrets.token_urlsafe(9)
    if user is None:
        User.objects.create_superuser("admin", "admin@localhost", password)
    else:
        user.set_password(password)
        user.save()
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(password + "\n")
    return password
