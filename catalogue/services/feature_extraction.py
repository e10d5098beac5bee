"""The body of a features run: a chunk of galaxies through each CNN, features stored per set.

Each role's model reads its own image size from the store; the activations of the
feature layers become one float32 :class:`~catalogue.models.FeatureVector` per galaxy and
set (upserted, so a redelivered chunk rewrites the same rows). When the run finishes,
features that are zero for every training galaxy are recorded as dropped.
"""

from __future__ import annotations

import numpy as np
from django.db import transaction

from catalogue.models import FeatureSet, FeatureVector, Galaxy, GalaxyStatus, Run, Split, TrainedModel
from catalogue.selectors import feature_matrix
from catalogue.services import runs
from catalogue.services.artifacts import load_keras_model
from catalogue.services.image_store import row_reader, written_rows
from pipeline.presets import FEATURE_LAYERS, cnn_network, preset

BATCH_SIZE = 256


def extract_features_body(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    from pipeline.cnn.data import ImageBatches
    from pipeline.cnn.training import predict_layers

    run = claim.run
    config = preset(run.preset)
    sets = run.config["feature_sets"]
    vectors: dict[int, list[FeatureVector]] = {}
    complete = set(claim.items)
    for role, model_id in run.config["models"].items():
        context.check(force=True)
        model = TrainedModel.objects.get(pk=model_id)
        store, ids, rows = written_rows(run.survey, cnn_network(config, role)["size"], claim.items)
        complete &= set(ids.tolist())
        if not len(ids):
            continue
        data = ImageBatches(row_reader(store), rows, None, BATCH_SIZE)
        activations = predict_layers(load_keras_model(model.artifact.name), list(FEATURE_LAYERS[role]), data)
        for layer, values in activations.items():
            set_id = sets[f"{role}.{layer}"]
            for galaxy_id, row in zip(ids.tolist(), values, strict=True):
                vectors.setdefault(set_id, []).append(FeatureVector(galaxy_id=galaxy_id, feature_set_id=set_id, values=row))
    outcome = runs.ChunkOutcome(done=len(complete), failed=len(claim.items) - len(complete))
    with transaction.atomic():
        for batch in vectors.values():
            FeatureVector.objects.bulk_create(
                batch, batch_size=2000, update_conflicts=True, unique_fields=["galaxy", "feature_set"], update_fields=["values"]
            )
        runs.complete_chunk(claim, outcome)
    return outcome


def record_dropped_features(run: Run) -> dict:
    """Features zero for every training galaxy are recorded as dropped (paper Sect. 3.4)."""
    training = Galaxy.objects.filter(survey=run.survey, status=GalaxyStatus.OK, split=Split.TRAIN)
    train = list(training.order_by("id").values_list("id", flat=True))
    summary = {}
    for name, set_id in run.config["feature_sets"].items():
        feature_set = FeatureSet.objects.get(pk=set_id)
        matrix, names = feature_matrix([feature_set], train, drop=False)
        zero = np.all(np.nan_to_num(matrix, nan=0.0) == 0, axis=0) if len(matrix) else np.zeros(len(names), bool)
        feature_set.dropped = [n for n, z in zip(names, zero, strict=True) if z]
        feature_set.save(update_fields=["dropped"])
        summary[name] = {"features": len(names), "dropped": len(feature_set.dropped)}
    return {"feature_sets": summary}


FEATURES_STAGE = runs.StageHooks(body=extract_features_body, on_finish=record_dropped_features)
