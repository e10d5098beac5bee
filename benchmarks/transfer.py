"""How well a model set does on a survey it was applied to, where that survey has targets.

For a survey predicted with a set trained elsewhere (``run_pipeline --survey NEW --models
SET``) and whose galaxies do have M/L targets (a simulated survey of another seed, or a
real one with SED fits), prints one JSON object: per named model the weighted L1 on every
galaxy of NEW's learning sample against the set's own test L1, the 68% and 95% interval
coverage overall and per morphology class, and how many galaxies the model flags outside
the set's training selection (with the L1 of flagged and unflagged ones).

    DATABASE_URL=postgres://... .venv/bin/python benchmarks/transfer.py --survey otherB --models trainA
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

import django  # noqa: E402

django.setup()

from catalogue.models import Prediction, Survey  # noqa: E402
from catalogue.services.model_sets import resolve_model_set  # noqa: E402
from pipeline.intervals import calibration  # noqa: E402
from pipeline.metrics import l1_per_galaxy, ml_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--survey", required=True, help="the survey the set was applied to (with targets)")
    parser.add_argument("--models", required=True, help="the model set: survey@run or its training survey's name")
    args = parser.parse_args()
    survey = Survey.objects.get(name=args.survey)
    model_set = resolve_model_set(args.models)
    report: dict = {"survey": survey.name, "model_set": model_set.name, "preset": model_set.preset, "models": {}}
    for model in model_set.named_models.order_by("name"):
        rows = list(
            Prediction.objects.filter(
                model=model, galaxy__survey=survey, galaxy__status="ok", galaxy__ml_g__isnull=False
            ).values_list(
                "ml_pred",
                "ml_lo68",
                "ml_hi68",
                "ml_lo95",
                "ml_hi95",
                "out_of_support",
                "galaxy__ml_g",
                "galaxy__ml_g_err",
                "galaxy__morphology",
            )
        )
        if not rows:
            report["models"][model.name] = {"n": 0}
            continue
        pred, lo68, hi68, lo95, hi95, flagged, target, error = (np.array([r[i] for r in rows], dtype=float) for i in range(8))
        classes = np.array([r[8] for r in rows], dtype=object)
        flagged = flagged.astype(bool)
        l1 = l1_per_galaxy(pred, target, error)
        coverage = calibration({0.68: (lo68, hi68), 0.95: (lo95, hi95)}, target, error, {"by_class": classes})
        own = model_set.metrics.get(model.name, {})
        report["models"][model.name] = {
            "n": len(rows),
            "l1": ml_metrics(pred, target, error)["l1"],
            "set_test_l1": own.get("test", {}).get("l1"),
            "coverage_68": coverage["coverage_68"],
            "coverage_95": coverage["coverage_95"],
            "set_test_coverage_68": own.get("coverage_68"),
            "width_68_dex": coverage["width_68_dex"],
            "by_class": {
                name: {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()}
                for name, entry in coverage["by_class"].items()
            },
            "n_flagged": int(flagged.sum()),
            "l1_flagged": float(l1[flagged].mean()) if flagged.any() else None,
            "l1_unflagged": float(l1[~flagged].mean()) if (~flagged).any() else None,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
