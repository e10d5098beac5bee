"""The cnn stage: train CNN1-3 on GZ2 probabilities, then CNN4 on M/L, and store them.

One run on the gpu queue with one chunk whose items are the roles to train
(``cnn1`` ... ``cnn4``, and ``cnn4gi`` where the preset makes i images and the survey has them).

CNN1-3 learn from the galaxies with GZ2 votes in the train split and are validated on the
validation split; CNN4 starts from CNN1's trained weights and learns from every train
galaxy with an M/L target. CNN4 on colour does the same on the galaxies with images in
every channel it reads (the g image and the g - i map), starting from its ``from``
network's weights. Each trained network is saved (atomically, through storage) with its
hyper-parameters, curves and validation metrics before the next one starts, so
a run that is delivered again after a crash continues with the networks still missing.
Progress (network, epoch, batch, loss) goes to the run; cancellation is honoured between
batches.
"""

from __future__ import annotations

import time

import numpy as np
from django.db import transaction

from catalogue.models import Galaxy, GalaxyStatus, GZ2Votes, ImageStore, Run, Split, Survey, TrainedModel
from catalogue.selectors import require_targets
from catalogue.services import faults, runs
from catalogue.services.artifacts import load_keras_model, save_keras_model
from catalogue.services.image_store import stacked_rows, staged_reader
from pipeline import gz2
from pipeline.learning.gbm import ConstantML
from pipeline.learning.metrics import l1_per_galaxy
from pipeline.presets import (
    ALL_ROLES,
    CNN_ROLES,
    COLOUR_ROLE,
    FEATURE_LAYERS,
    ML_ROLES,
    cnn_network,
    input_channels,
    network_roles,
    preset,
    role_training,
)

PROGRESS_INTERVAL_S = 1.0


def plan(survey: Survey, preset_name: str, *, force: bool = False) -> runs.Plan:  # noqa: ARG001 - every start redoes
    """One chunk: the preset's networks, at the sizes the survey must have images for.

    CNN4 on colour is left out, with the reason in the run's config (``skipped``), when the
    survey has no images of a channel it reads (no i cutouts): the four g networks train.

    Raises
    ------
    ValueError
        for an unknown preset, a survey without M/L targets, or when the survey has no
        images at a network's input size.
    """
    config = preset(preset_name)
    require_targets(survey)
    sizes = sorted({cnn_network(config, role)["size"] for role in CNN_ROLES})
    g_stores = ImageStore.objects.filter(survey=survey, resolution__in=sizes, channel=ImageStore.Channel.G)
    have = set(g_stores.values_list("resolution", flat=True))
    missing = [s for s in sizes if s not in have]
    if missing:
        raise ValueError(
            f"survey {survey.name} has no preprocessed images at {', '.join(f'{s} px' for s in missing)}; "
            f"run the preprocess stage with the {preset_name} preset first"
        )
    roles, skipped = list(network_roles(config)), {}
    if COLOUR_ROLE in roles:
        size, channels = cnn_network(config, COLOUR_ROLE)["size"], input_channels(config, COLOUR_ROLE)
        stores = ImageStore.objects.filter(survey=survey, resolution=size, channel__in=channels)
        lacking = sorted(set(channels) - set(stores.values_list("channel", flat=True)))
        if lacking:
            roles.remove(COLOUR_ROLE)
            skipped[COLOUR_ROLE] = f"survey {survey.name} has no {' or '.join(lacking)} images at {size} px"
    return runs.Plan(
        chunks=[roles],
        resolutions=tuple(sizes),
        config={
            "cnn": config["cnn"],
            "colour_network": config.get("colour_network"),
            "training": config["training"],
            "role_training": config.get("role_training", {}),
            **({"skipped": skipped} if skipped else {}),
        },
    )


def inputs() -> dict:
    """The roles trained and the layers each keeps as features."""
    return {"roles": list(ALL_ROLES), "feature_layers": {r: list(layers) for r, layers in FEATURE_LAYERS.items()}}


def run_chunk(claim: runs.ChunkClaim, context: runs.ChunkContext) -> runs.ChunkOutcome:
    """Train every role of the claimed chunk that this run has not trained yet."""
    run = claim.run
    roles = [str(role) for role in claim.items]
    for position, role in enumerate(roles):
        if TrainedModel.objects.filter(run=run, name=role).exists():
            continue  # trained before a crash: keep it
        faults.before_step("cnn", role)
        _train_role(run, role, position, len(roles), context)
    with transaction.atomic():
        runs.complete_chunk(claim, runs.ChunkOutcome(done=len(roles)))
    return runs.ChunkOutcome(done=len(roles))


def _split_ids(survey, split: str, role: str) -> tuple[list[int], np.ndarray]:
    """Galaxy ids of a split and their targets: GZ2 probabilities (CNN1-3) or (M/L, error) (CNN4s)."""
    base = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK, split=split)
    if role in ML_ROLES:
        rows = list(base.filter(ml_g__isnull=False, ml_g_err__isnull=False).order_by("id").values_list("id", "ml_g", "ml_g_err"))
        return [r[0] for r in rows], np.array([r[1:] for r in rows], dtype=np.float32).reshape(-1, 2)
    votes = dict(GZ2Votes.objects.filter(galaxy__in=base).values_list("galaxy_id", "probabilities"))
    ids = sorted(votes)
    return ids, np.array([votes[g] for g in ids], dtype=np.float32).reshape(-1, gz2.N_ANSWERS)


def _dataset(run: Run, role: str, split: str, network: dict, batch_size: int, train: bool):
    from pipeline.cnn.data import ImageBatches

    ids, targets = _split_ids(run.survey, split, role)
    size, channels = network["size"], tuple(network.get("channels", ("g",)))
    stores, kept, rows = stacked_rows(run.survey, size, ids, channels)
    if stores is None or not len(kept):
        which = "with GZ2 votes" if role not in ML_ROLES else "with an M/L target"
        images = f"{size} px {' and '.join(channels)} images"
        raise ValueError(f"{role}: no {split} galaxies {which} have {images}; preprocess the survey first")
    index = {g: i for i, g in enumerate(ids)}
    targets = targets[[index[g] for g in kept]]
    reader, rows = staged_reader(stores, rows)  # on object storage, fetched once for every epoch
    data = ImageBatches(reader, rows, targets, batch_size, shuffle=train, augment=train, seed=runs.seed_of(run))
    return data, kept, targets


def _train_role(run: Run, role: str, position: int, n_roles: int, context: runs.ChunkContext) -> None:
    from pipeline.cnn import keras, networks
    from pipeline.cnn.training import TrainingConfig, train_gz2, train_ml

    network = cnn_network(run.config, role)
    config = TrainingConfig.from_settings(role_training(run.config, role), seed=runs.seed_of(run))
    keras.utils.set_random_seed(config.seed)  # before building: the initial weights come from the seed too
    train_data, train_ids, train_targets = _dataset(run, role, Split.TRAIN, network, config.batch_size, True)
    val_data, _, val_targets = _dataset(run, role, Split.VAL, network, config.batch_size, False)
    if role == "cnn4":
        cnn1 = TrainedModel.objects.get(run=run, name="cnn1")
        model = networks.build_ml_network(load_keras_model(cnn1.artifact.name), name=f"cnn4_{network['arch']}")
        trainer = train_ml
    elif role == COLOUR_ROLE:
        if network["arch"] != "custom":
            raise ValueError(f"{role} starts from a custom network; {network['from']} is a {network['arch']}")
        source = TrainedModel.objects.get(run=run, name=network["from"])
        model = networks.build_colour_ml_network(
            load_keras_model(source.artifact.name), network["options"], len(network["channels"]), name=f"{role}_{network['arch']}"
        )
        trainer = train_ml
    else:
        model = networks.build(network["arch"], network["size"], name=f"{role}_{network['arch']}", **network["options"])
        trainer = train_gz2
    last_report = [0.0]

    def progress(epoch: int, batch: int, batches: int, logs: dict) -> None:
        context.check()
        if time.monotonic() - last_report[0] < PROGRESS_INTERVAL_S and batch < batches:
            return
        last_report[0] = time.monotonic()
        done = (position + ((epoch - 1) + batch / batches) / config.epochs) / n_roles
        loss = logs.get("loss", float("nan"))
        message = f"{role}: epoch {epoch}/{config.epochs}, batch {batch}/{batches}, loss {loss:.4g}"
        runs.report_progress(run.pk, done, message, done=position)

    result = trainer(model, train_data, val_data, config, progress=progress)
    metrics = _validation_metrics(model, role, val_data, val_targets, train_targets)
    metrics.update(
        best_epoch=result.best_epoch, best_val_loss=result.best_val_loss, n_train=len(train_ids), n_val=len(val_targets)
    )
    name = save_keras_model(model, f"models/{run.survey.name}/run{run.pk}/{model.name}.keras")
    TrainedModel.objects.create(
        kind=TrainedModel.Kind.CNN,
        name=role,
        survey=run.survey,
        run=run,
        preset=run.preset,
        artifact=name,
        hyperparameters={
            **network,
            "training": config.as_dict(),
            "keras_name": model.name,
            "params": model.count_params(),
            "feature_widths": {layer: int(model.get_layer(layer).output.shape[-1]) for layer in FEATURE_LAYERS[role]},
        },
        metrics=metrics,
        curves=result.history,
    )


def _validation_metrics(model, role: str, val_data, val_targets: np.ndarray, train_targets: np.ndarray) -> dict:
    """CNN1-3: RMSE over all 37 answers and per task, against predicting the training mean.
    CNN4: weighted L1 of its M/L against predicting the training galaxies' weighted median (the
    constant model), and the best Spearman correlation of its 37 features with M/L."""
    from scipy.stats import spearmanr

    from pipeline.cnn.training import predict_layers

    if role not in ML_ROLES:
        predicted = predict_layers(model, ["gz2"], val_data)["gz2"]
        mean = train_targets.mean(axis=0, keepdims=True)
        per_task = {
            task.id: {"rmse": _rmse(predicted[:, s], val_targets[:, s]), "rmse_train_mean": _rmse(mean[:, s], val_targets[:, s])}
            for task in gz2.TASKS
            for s in [gz2.TASK_SLICES[task.id]]
        }
        return {"rmse": _rmse(predicted, val_targets), "rmse_train_mean": _rmse(mean, val_targets), "per_task": per_task}
    outputs = predict_layers(model, ["ml", "gz2_logits"], val_data)
    target, error = val_targets[:, 0], val_targets[:, 1]
    l1 = float(np.mean(l1_per_galaxy(outputs["ml"][:, 0], target, error)))
    constant = ConstantML().fit(np.zeros((len(train_targets), 0)), train_targets[:, 0], error=train_targets[:, 1])
    l1_constant = float(np.mean(l1_per_galaxy(constant.predict(np.zeros((len(target), 0))), target, error)))
    correlations = [spearmanr(column, target).statistic for column in outputs["gz2_logits"].T if np.ptp(column) > 0]
    best = max(correlations, key=abs) if correlations else float("nan")
    return {
        "val_weighted_l1": l1,
        "val_weighted_l1_constant": l1_constant,
        "best_feature_spearman": float(best),
        "features_alive": len(correlations),
    }


def _rmse(predicted: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - target) ** 2)))


HOOKS = runs.StageHooks(body=run_chunk)
