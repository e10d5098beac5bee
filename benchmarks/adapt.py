"""A model set taken to another instrument: as it is, adapted with N of the new survey's targets, and trained there.

Given a training bundle (the project's usual survey: ``simulate_survey --n 2000 --seed 1``) and a
bundle from another instrument with targets (``simulate_survey --n 2000 --seed 29 --psf-fwhm 2.24
--pixel-scale 0.262 --sky-noise 3``), it ingests both (or reuses surveys of those names), trains
a ``--preset`` set on the first, applies it to the second as it is, adapts it with each of
``--targets`` (``run_pipeline --models FROM --adapt --targets N``), and trains a set from scratch
on the second survey's own targets. Everything runs in this process (no broker). Prints one JSON
object: per set, for g_morph and gi_morph, the weighted L1 and the 68%/95% interval coverage on the
new survey's test split (no set was adapted or trained on it), the adapted sets' own held-out
figures (every galaxy they were not adapted on), the training set's in-survey test L1, and what the
scaling fallback did: the L1 of the galaxies whose g image was too shallow for the paper's scaling,
predicted from their image (g_morph) against the model their catalogue row falls back to without
one (dropping the image: the best-validated model that needs none).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/adapt.py \\
        --train-bundle var/base --new-bundle var/other --targets 100,300,1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
MODELS = ("g_morph", "gi_morph")
#: The stages of a training here (the experiments are not what is measured).
TRAINING = ("preprocess", "cnn", "features", "gbm", "predict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-bundle", required=True)
    parser.add_argument("--new-bundle", required=True)
    parser.add_argument("--train-name", default="adapt_from")
    parser.add_argument("--new-name", default="adapt_new")
    parser.add_argument("--targets", default="100,300,1000")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--skip-scratch", action="store_true", help="do not train a set on the new survey")
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command

    from catalogue.models import ModelSet, Run, Survey
    from catalogue.orchestration.start import start
    from catalogue.selectors import adapted_set_of_workflow
    from catalogue.services.ingest import ingest_bundle

    call_command("migrate", verbosity=0)
    seconds: dict[str, float] = {}

    def survey(bundle: str, name: str) -> Survey:
        if not Survey.objects.filter(name=name).exists():
            ingest_bundle(Path(bundle), name)
        return Survey.objects.get(name=name)

    def timed(label: str, *a, **kw) -> Run:
        started = time.perf_counter()
        run = start(*a, **kw)
        seconds[label] = round(time.perf_counter() - started, 1)
        assert run.status == Run.Status.SUCCEEDED, f"{label}: {run.message} {run.error[-2000:]}"
        return run

    source_survey, new = survey(args.train_bundle, args.train_name), survey(args.new_bundle, args.new_name)
    timed("train", source_survey, list(TRAINING), preset_name=args.preset)
    source = ModelSet.objects.filter(survey=source_survey).order_by("-created").first()
    timed("apply", new, model_set=source)
    sets = {"as_is": source}
    for n in (int(t) for t in args.targets.split(",") if t):
        workflow = timed(f"adapt_{n}", new, model_set=source, adapt=True, targets=n)
        sets[f"adapted_{n}"] = adapted_set_of_workflow(workflow)
    if not args.skip_scratch:
        timed("scratch", new, list(TRAINING), preset_name=args.preset)
        trained_here = ModelSet.objects.filter(survey=new).exclude(lineage__has_key="adapted_from")
        sets["scratch"] = trained_here.order_by("-created", "-pk").first()
    report = {
        "preset": args.preset,
        "train_survey": source_survey.name,
        "new_survey": new.name,
        "source_set": source.name,
        "source_in_survey_test_l1": {m: source.metrics.get(m, {}).get("test", {}).get("l1") for m in MODELS},
        "on_new_test_split": {label: figures(model_set, new) for label, model_set in sets.items()},
        "adapted_own_held_out": {
            label: {
                m: {
                    "n": model_set.lineage["targets"]["held_out"],
                    "l1": model_set.metrics[m]["test"].get("l1"),
                    "coverage_68": model_set.metrics[m].get("coverage_68"),
                    "coverage_95": model_set.metrics[m].get("coverage_95"),
                    "as_is_l1": model_set.metrics[m].get("as_is", {}).get("test", {}).get("l1"),
                    "method": model_set.metrics[m].get("method"),
                }
                for m in MODELS
                if m in model_set.metrics
            }
            for label, model_set in sets.items()
            if label.startswith("adapted")
        },
        "scaling_fallback": {label: fallback_figures(model_set, new) for label, model_set in sets.items()},
        "seconds": seconds,
    }
    print(json.dumps(report, indent=1))


def _predictions(model_set, survey, names):
    from catalogue.models import Prediction

    rows = Prediction.objects.filter(model__model_set=model_set, model__name__in=names, galaxy__survey=survey)
    return rows.values_list(
        "model__name", "galaxy_id", "ml_pred", "ml_lo68", "ml_hi68", "ml_lo95", "ml_hi95", "galaxy__ml_g", "galaxy__ml_g_err"
    )


def _scores(values: list[tuple]) -> dict:
    from pipeline.learning.metrics import l1_per_galaxy

    if not values:
        return {"n": 0}
    p, lo68, hi68, lo95, hi95, t, e = (np.array(v, dtype=float) for v in zip(*values, strict=True))
    return {
        "n": len(p),
        "l1": round(float(np.mean(l1_per_galaxy(p, t, e))), 3),
        "coverage_68": round(float(np.mean((lo68 <= t) & (t <= hi68))), 3),
        "coverage_95": round(float(np.mean((lo95 <= t) & (t <= hi95))), 3),
    }


def figures(model_set, survey) -> dict:
    """g_morph's and gi_morph's L1 and coverage on the survey's test split (targets, learning sample)."""
    from catalogue.models import Galaxy

    test = set(Galaxy.objects.filter(survey=survey, split="test", status="ok", ml_g__isnull=False).values_list("pk", flat=True))
    out = {}
    for name in MODELS:
        rows = [r[2:] for r in _predictions(model_set, survey, [name]) if r[1] in test]
        out[name] = _scores(rows)
    out["name"] = model_set.name
    return out


def unseen(model_set, survey) -> set[int]:
    """The survey's galaxies the set never learnt from: all of them for a set trained elsewhere, all but the
    adaptation galaxies for a set adapted to it, the test split for a set trained on it."""
    from catalogue.models import Galaxy
    from catalogue.services.artifacts import load_pickle

    galaxies = Galaxy.objects.filter(survey=survey)
    if model_set.survey_id != survey.pk:
        return set(galaxies.values_list("pk", flat=True))
    if "adapted_from" in model_set.lineage:
        seen = load_pickle(model_set.named_models.get(name="g_morph").artifact.name).adaptation.galaxy_ids
        return set(galaxies.exclude(pk__in=seen.tolist()).values_list("pk", flat=True))
    return set(galaxies.filter(split="test").values_list("pk", flat=True))


def fallback_figures(model_set, survey) -> dict:
    """On the galaxies with targets whose g image got the closest scaling value (flagged) and that the set
    never learnt from (:func:`unseen`): every named
    model's L1 and coverage, and the catalogue's choice with the image kept (the best-validated model
    the galaxy has the inputs of) against the choice without it (the best-validated model needing no image:
    what dropping the image leaves)."""
    from catalogue.models import Galaxy
    from pipeline.learning.named_models import NAMED, required_inputs

    flagged = set(
        Galaxy.objects.filter(survey=survey, preprocessed__scaling_fallback=True, ml_g__isnull=False).values_list("pk", flat=True)
    ) & unseen(model_set, survey)
    members = sorted(model_set.named_models.all(), key=lambda m: (m.metrics or {}).get("val", {}).get("l1", np.inf))
    kept = next((m.name for m in members if required_inputs(NAMED[m.name]) <= {"mag_i", "g_image", "i_image"}), None)
    dropped = next((m.name for m in members if required_inputs(NAMED[m.name]) <= {"mag_i"}), None)
    out = {"galaxies": len(flagged), "catalogue_with_image": kept, "catalogue_without_image": dropped, "models": {}}
    for model in members:
        rows = [r[2:] for r in _predictions(model_set, survey, [model.name]) if r[1] in flagged]
        out["models"][model.name] = _scores(rows)
    return out


if __name__ == "__main__":
    main()
