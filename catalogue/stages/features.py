"""The features stage: every galaxy of a survey through the trained CNNs, features stored per set.

The features (docs/stages.md): CNN1-3's 37 GZ2 probabilities, CNN1's pooled
activations and CNN4's 37 next-to-last activations, for every galaxy with images (all
splits, with or without targets or votes), each set stored as a versioned
:class:`~catalogue.models.FeatureSet` created when the run starts. Where the networks
include CNN4 on colour, its 37 activations too, for the galaxies with images in every
channel it reads; a galaxy without an i image has none and is not counted as failed.

Each role's model reads its own image size from the store; the activations of the
feature layers become one float32 :class:`~catalogue.models.FeatureVector` per galaxy and
set (upserted, so a redelivered chunk rewrites the same rows). When the run finishes,
features that are zero for every training galaxy are recorded as dropped.

With ``model_set`` (applying a trained set to another survey) the networks are the set's
and the dropped features are those of the set's training survey: the models were fitted
without them, whatever this survey's galaxies look like.
"""

from __future__ import annotations

import numpy as np
from django.db import transaction
from django.db.models import Max

from catalogue.models import FeatureSet, FeatureVector, Galaxy, GalaxyStatus, ModelSet, Run, Split, Survey, TrainedModel
from catalogue.selectors import feature_matrix, latest_cnn_models, set_networks
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_keras_model
from catalogue.services.image_store import stacked_reader, stacked_rows, written_rows
from pipeline import gz2
from pipeline.presets import CNN_ROLES, FEATURE_LAYERS, PRESETS, cnn_network, preset

BATCH_SIZE = 256


def feature_names(prefix: str, layer: str, width: int) -> list[str]:
    """Column names, e.g. ``cnn1_resnet50.p_a01_smooth``, ``cnn1_resnet50.pool_0017``."""
    if layer == "gz2":
        return [f"{prefix}.p_{a}_{dict(gz2.TASK_BY_ID[gz2.TASK_OF_ANSWER[a]].answers)[a]}" for a in gz2.ANSWER_IDS]
    if layer == "pool":
        return [f"{prefix}.pool_{i:04d}" for i in range(width)]
    return [f"{prefix}.penultimate_{i:02d}" for i in range(width)]


def plan(survey: Survey, preset_name: str, *, force: bool = False, model_set: int | None = None) -> runs.Plan:  # noqa: ARG001
    """Chunks of the survey's galaxies with images at every network's size, through its latest
    CNNs (or the networks of the model set with id ``model_set``).

    Raises
    ------
    ValueError
        when a CNN role has no trained network yet.
    """
    config = preset(preset_name)
    models = set_networks(ModelSet.objects.get(pk=model_set)) if model_set else latest_cnn_models(survey, preset_name)
    missing = [r for r in CNN_ROLES if r not in models]
    if model_set and missing:
        raise ValueError(f"model set #{model_set} lacks the network(s) {', '.join(missing)}")
    if missing:
        raise ValueError(
            f"no trained {', '.join(missing)} for survey {survey.name} and preset {preset_name}; run the cnn stage first"
        )
    candidates = Galaxy.objects.filter(survey=survey).exclude(status=GalaxyStatus.REJECTED)
    ids = list(candidates.order_by("id").values_list("id", flat=True))
    for size in sorted({cnn_network(config, r)["size"] for r in CNN_ROLES}):
        ids = written_rows(survey, size, ids)[1].tolist()
    size = int(config["feature_chunk_size"])
    # An applied set's features must be made as its models' were: with the same symmetries.
    symmetries = set_symmetries(ModelSet.objects.get(pk=model_set)) if model_set else int(config.get("feature_symmetries", 1))

    def create_feature_sets(run: Run) -> None:
        sets: dict[str, int] = {}
        for role in models:
            model = models[role]
            prefix = model.hyperparameters.get("keras_name", role)
            for layer in FEATURE_LAYERS[role]:
                name = f"{role}.{layer}"
                version = (FeatureSet.objects.filter(survey=survey, name=name).aggregate(v=Max("version"))["v"] or 0) + 1
                width = model.hyperparameters["feature_widths"][layer]  # recorded at training: no Keras here
                names = feature_names(prefix, layer, width)
                created = FeatureSet.objects.create(
                    name=name,
                    version=version,
                    survey=survey,
                    feature_names=names,
                    producing_model=model,
                    run=run,
                    symmetries=symmetries,
                )
                sets[name] = created.pk
        Run.objects.filter(pk=run.pk).update(config={**run.config, "feature_sets": sets})

    return runs.Plan(
        chunks=[ids[i : i + size] for i in range(0, len(ids), size)],
        config={
            "models": {r: m.pk for r, m in models.items()},
            "symmetries": symmetries,
            **({"model_set": model_set} if model_set else {}),
        },
        prepare=create_feature_sets,
    )


def inputs() -> dict:
    """The layers whose activations become features, and each preset's test-time symmetries."""
    return {
        "feature_layers": {r: list(layers) for r, layers in FEATURE_LAYERS.items()},
        "symmetries": {name: int(p.get("feature_symmetries", 1)) for name, p in PRESETS.items()},
    }


def set_symmetries(model_set: ModelSet) -> int:
    """The test-time symmetries of the features a model set's models were fitted on."""
    found = set(FeatureSet.objects.filter(pk__in=model_set.feature_sets.values()).values_list("symmetries", flat=True))
    if len(found) > 1:
        raise ValueError(f"model set {model_set.name} mixes features made with {sorted(found)} symmetries")
    return found.pop() if found else 1


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    from pipeline.cnn.data import ImageBatches
    from pipeline.cnn.training import predict_layers

    run = claim.run
    sets = run.config["feature_sets"]
    vectors: dict[int, list[FeatureVector]] = {}
    complete = set(claim.items)
    for role, model_id in run.config["models"].items():
        context.check(force=True)
        faults.before_step("features", role)
        model = TrainedModel.objects.get(pk=model_id)
        size = int(model.hyperparameters["size"])  # recorded at training, as the upload path reads it
        channels = tuple(model.hyperparameters.get("channels", ("g",)))
        stores, ids, rows = stacked_rows(run.survey, size, claim.items, channels)
        if role in CNN_ROLES:  # the colour network's features are optional: a galaxy without i keeps its g ones
            complete &= set(ids.tolist())
        if not len(ids):
            continue
        data = ImageBatches(stacked_reader(stores), rows, None, BATCH_SIZE)
        network = load_keras_model(model.artifact.name)
        activations = predict_layers(network, list(FEATURE_LAYERS[role]), data, int(run.config.get("symmetries", 1)))
        for layer, values in activations.items():
            set_id = sets[f"{role}.{layer}"]
            for galaxy_id, row in zip(ids.tolist(), values, strict=True):
                vectors.setdefault(set_id, []).append(FeatureVector(galaxy_id=galaxy_id, feature_set_id=set_id, values=row))
    missing = len(claim.items) - len(complete)
    reasons = {"no preprocessed image in the image store (preprocessing failed or was not run)": missing} if missing else {}
    outcome = runs.ChunkOutcome(done=len(complete), failed=missing, reasons=reasons)
    with transaction.atomic():
        for batch in vectors.values():
            FeatureVector.objects.bulk_create(
                batch, batch_size=2000, update_conflicts=True, unique_fields=["galaxy", "feature_set"], update_fields=["values"]
            )
        runs.complete_chunk(claim, outcome)
    return outcome


def record_dropped_features(run: Run) -> dict:
    """Features zero for every training galaxy are recorded as dropped (paper Sect. 3.4)."""
    if run.config.get("model_set"):
        return _copy_dropped_features(run, ModelSet.objects.get(pk=run.config["model_set"]))
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


def _copy_dropped_features(run: Run, model_set: ModelSet) -> dict:
    """A set's features come with the training survey's dropped list: its models never saw those."""
    trained_on = {fs.name: fs for fs in FeatureSet.objects.filter(pk__in=model_set.feature_sets.values())}
    summary = {}
    for name, set_id in run.config["feature_sets"].items():
        feature_set = FeatureSet.objects.get(pk=set_id)
        feature_set.dropped = list(trained_on[name].dropped) if name in trained_on else []
        feature_set.save(update_fields=["dropped"])
        summary[name] = {"features": len(feature_set.feature_names), "dropped": len(feature_set.dropped)}
    return {"feature_sets": summary, "model_set": model_set.name}


HOOKS = runs.StageHooks(body=run_chunk, on_finish=record_dropped_features)
