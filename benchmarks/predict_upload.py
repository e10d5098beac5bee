"""Latency of ``POST /api/predict/``: one uploaded galaxy through a model set, warm, on this machine.

Takes galaxies of the set's training survey whose g cutouts are still in its bundle
directory (``Survey.source_path``), uploads each through Django's test client as a
logged-in user (one unmeasured warm-up first: the networks load once per process) and
prints one JSON object with the p50 and p95 over ``--n`` uploads, and how many answers
equal the galaxy's stored g_morph prediction to 1e-6: all of them where the survey's star
removal had no catalogue stars to use (an upload detects stars blindly, as a survey without
stars.csv does); where it had, the two star removals may differ.

    DATABASE_URL=postgres://... .venv/bin/python benchmarks/predict_upload.py --models trainA --n 100
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
os.environ.setdefault("API_PREDICT_RATE", "1000000/minute")
os.environ.setdefault("API_USER_RATE", "1000000/minute")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client  # noqa: E402

from catalogue.models import Galaxy, Prediction  # noqa: E402
from catalogue.selectors import resolve_model_set  # noqa: E402
from pipeline.learning.named_models import CATALOGUE_MODEL  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, help="model set: survey@run or a training survey's name")
    parser.add_argument("--n", type=int, default=100, help="timed uploads")
    args = parser.parse_args()
    model_set = resolve_model_set(args.models)
    images = Path(model_set.survey.source_path) / "images"
    galaxies = [
        g
        for g in Galaxy.objects.filter(survey=model_set.survey, preprocessed__status="ok").order_by("objid")[: args.n + 1]
        if (images / f"{g.objid}_g.fits").exists()
    ]
    if len(galaxies) < 2:
        raise SystemExit(f"{images} holds too few of the survey's cutouts to time uploads")
    user, _ = User.objects.get_or_create(username="benchmark-predict")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    times = []
    equal = {"no catalogue star in the field": [0, 0], "catalogue stars in the field": [0, 0]}
    for attempt, galaxy in enumerate(galaxies):
        fields = {"z": galaxy.z, "mag_g": galaxy.mag_g, "objid": galaxy.objid, "models": model_set.name}
        fields.update({k: getattr(galaxy, k) for k in ("magerr_g", "mag_i") if getattr(galaxy, k) is not None})
        image = io.BytesIO((images / f"{galaxy.objid}_g.fits").read_bytes())
        image.name = "cutout.fits"
        start = time.perf_counter()
        response = client.post("/api/predict/", {**fields, "image": image})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.content[:300]
        if attempt:
            times.append(elapsed)
        stored = Prediction.objects.filter(galaxy=galaxy, model__model_set=model_set, model__name=CATALOGUE_MODEL).first()
        answer = response.json()["predictions"].get(CATALOGUE_MODEL)
        # The survey's star removal used its star catalogue (where it has one); an upload detects blindly.
        kind = "catalogue stars in the field" if galaxy.extra.get("stars") else "no catalogue star in the field"
        equal[kind][0] += bool(stored and answer and abs(answer["ml"] / stored.ml_pred - 1) < 1e-6)
        equal[kind][1] += 1
    print(
        json.dumps(
            {
                "benchmark": "predict_upload",
                "model_set": model_set.name,
                "preset": model_set.preset,
                "resolutions_px": model_set.resolutions,
                "uploads": len(times),
                "p50_s": round(float(np.percentile(times, 50)), 4),
                "p95_s": round(float(np.percentile(times, 95)), 4),
                "max_s": round(float(np.max(times)), 4),
                "survey_has_star_catalogue": model_set.survey.has_star_catalogue,
                "g_morph_equal_to_stored": {kind: f"{n} of {total}" for kind, (n, total) in equal.items()},
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
