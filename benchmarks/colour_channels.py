"""Which second channel CNN4 on colour should read: the i log image or the g - i colour map.

On a survey already through the pipeline (its CNN1 trained, g, i and g - i images stored),
CNN4 on colour is trained once per choice of channels with the survey's preset (same seed,
same epochs and early stopping), its features extracted for every galaxy with both images,
and ``gi_images`` refitted with them in place of the stored CNN4-on-colour features (the
gbm run's own hyper-parameters for gi_images, no grid). Prints per choice the network's
validation L1, gi_images' validation and test L1 (test: the galaxies with i images) and
the training seconds, beside the stored gi_morph's test L1 on the same galaxies. Run from
the repository root against the database that holds the survey:

    DATABASE_URL=... MEDIA_ROOT=... .venv/bin/python benchmarks/colour_channels.py --survey demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

CHOICES = (("g", "i"), ("g", "g-i"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", required=True)
    parser.add_argument("--choices", default=",".join("+".join(c) for c in CHOICES), help="e.g. g+i,g+g-i")
    args = parser.parse_args()
    import django

    django.setup()
    from dataclasses import replace

    from catalogue.models import Galaxy, GalaxyStatus, RunStage, Survey, TrainedModel
    from catalogue.selectors import latest_named_models, latest_succeeded_run
    from catalogue.services.artifacts import load_keras_model, load_pickle
    from catalogue.services.image_store import stacked_reader, stacked_rows
    from catalogue.services.learning_data import load_learning_data
    from catalogue.stages.cnn import _dataset
    from pipeline.cnn import networks
    from pipeline.cnn.data import ImageBatches
    from pipeline.cnn.training import TrainingConfig, predict_layers, train_ml
    from pipeline.learning.named_models import NAMED
    from pipeline.learning.regression import fit_model, score
    from pipeline.presets import COLOUR_ROLE, cnn_network, preset, role_training

    survey = Survey.objects.get(name=args.survey)
    cnn_run = latest_succeeded_run(survey, RunStage.CNN)
    config = preset(cnn_run.preset)
    named = latest_named_models(survey)
    stored = {name: load_pickle(named[name].artifact.name) for name in ("gi_morph", "gi_images") if name in named}
    data, _ = load_learning_data(survey, named["gi_morph"].hyperparameters["feature_sets"])
    test = data.rows("test")
    test = test[data.covered((COLOUR_ROLE,), test)]
    network = cnn_network(config, COLOUR_ROLE)
    source = TrainedModel.objects.get(run=cnn_run, name=network["from"])
    training = TrainingConfig.from_settings(role_training(config, COLOUR_ROLE), seed=cnn_run.pk)
    ids = list(
        Galaxy.objects.filter(survey=survey).exclude(status=GalaxyStatus.REJECTED).order_by("id").values_list("id", flat=True)
    )
    position = {int(g): i for i, g in enumerate(data.galaxy_ids)}
    group = data.groups[COLOUR_ROLE]
    results = {}
    for choice in (tuple(c.split("+")) for c in args.choices.split(",")):
        chosen = {**network, "channels": list(choice)}
        fake_run = SimpleNamespace(survey=survey, pk=cnn_run.pk)
        train_data, _, _ = _dataset(fake_run, COLOUR_ROLE, "train", chosen, training.batch_size, True)
        val_data, _, _ = _dataset(fake_run, COLOUR_ROLE, "val", chosen, training.batch_size, False)
        model = networks.build_colour_ml_network(load_keras_model(source.artifact.name), network["options"], len(choice))
        started = time.perf_counter()
        trained = train_ml(model, train_data, val_data, training)
        seconds = time.perf_counter() - started
        stores, kept, rows = stacked_rows(survey, network["size"], ids, choice)
        features = predict_layers(model, ["gz2_logits"], ImageBatches(stacked_reader(stores), rows, None, 256))["gz2_logits"]
        columns = data.columns.copy()
        block = np.full((len(data.galaxy_ids), len(group)), np.nan, np.float32)
        at = np.array([position[int(g)] for g in kept])
        block[at] = features[:, [int(name.rsplit("_", 1)[1]) for name in group]]  # the stored set's kept units
        columns[:, [data.index[n] for n in group]] = block
        refit_data = replace(data, columns=columns)
        params = stored["gi_images"].params if "gi_images" in stored else stored["gi_morph"].params
        fitted = fit_model(NAMED["gi_images"], refit_data, params=params, importance=False, uncertainty=False, seed=cnn_run.pk)
        results["+".join(choice)] = {
            "network_val_loss": round(trained.best_val_loss, 4),
            "best_epoch": trained.best_epoch,
            "epochs_run": len(trained.history["val_loss"]),
            "train_seconds": round(seconds, 1),
            "gi_images_val_l1": round(fitted.val_metrics["l1"], 4),
            "gi_images_test_l1": round(score(fitted, refit_data, test)[0]["l1"], 4),
        }
    gi_morph_test = score(stored["gi_morph"], data, test)[0]["l1"]
    print(
        json.dumps(
            {
                "benchmark": "colour_channels",
                "survey": survey.name,
                "preset": cnn_run.preset,
                "test_galaxies_with_i": int(len(test)),
                "gi_morph_test_l1": round(gi_morph_test, 4),
                "choices": results,
                "note": "each refit's features fill the stored set's kept (not always zero) units",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
