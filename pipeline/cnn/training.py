"""Training a network the paper's way: Nadam, learning rate x0.3 after 4 epochs without
validation improvement, the best validation epoch kept, at most the preset's epochs.

With ``stop_patience`` training also stops after that many epochs without a better
validation loss (early stopping): on the ``fast`` preset CNN4's best epoch came at 4 of
20 and the 16 after it bought nothing, while CNN1-3 still improved at epoch 20. The best
epoch's weights are kept either way, so stopping after it changes nothing but the time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.cnn.data import SYMMETRIES, ImageBatches
from pipeline.cnn.losses import weighted_l1

#: progress(epoch, batch, batches, logs): called after every batch (and may raise to stop).
Progress = Callable[[int, int, int, dict], None]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training; stored with the trained model."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_factor: float = 0.3
    lr_patience: int = 4
    #: Stop after this many epochs without a better validation loss (0: train every epoch).
    stop_patience: int = 0
    #: Run each step eagerly instead of tracing it into a graph: for networks so small that tracing
    #: costs more than the steps (the ``test`` preset's), never for real training.
    run_eagerly: bool = False
    seed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_settings(cls, settings: dict, seed: int = 0) -> TrainingConfig:
        """The config of a preset's training settings (:func:`pipeline.presets.role_training`);
        keys that are not training hyper-parameters are left out."""
        return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__ and k != "seed"}, seed=seed)


@dataclass
class TrainingResult:
    history: dict[str, list[float]] = field(default_factory=dict)  # loss, val_loss, lr per epoch
    best_epoch: int = 0
    best_val_loss: float = math.inf


class _KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the best validation epoch in memory and restores them at the end."""

    def __init__(self):
        super().__init__()
        self.best, self.best_epoch, self.weights = math.inf, 0, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss", math.inf)
        if value < self.best:
            self.best, self.best_epoch, self.weights = value, epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):  # noqa: ARG002 - Keras callback signature
        if self.weights is not None:
            self.model.set_weights(self.weights)


class _ReportProgress(keras.callbacks.Callback):
    def __init__(self, progress: Progress, batches: int):
        super().__init__()
        self.progress, self.batches, self.epoch = progress, batches, 0

    def on_epoch_begin(self, epoch, logs=None):  # noqa: ARG002 - Keras callback signature
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self.progress(self.epoch, batch + 1, self.batches, dict(logs or {}))


def train(
    model: keras.Model,
    train_data: ImageBatches,
    val_data: ImageBatches,
    config: TrainingConfig,
    loss: str | Callable = "mse",
    progress: Progress | None = None,
) -> TrainingResult:
    """Fit ``model`` in place; returns the per-epoch curves and the best epoch (whose weights it keeps)."""
    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=config.learning_rate), loss=loss, run_eagerly=config.run_eagerly)
    keep = _KeepBest()
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.lr_factor, patience=config.lr_patience),
        keep,
    ]
    if config.stop_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.stop_patience))
    if progress is not None:
        callbacks.append(_ReportProgress(progress, len(train_data)))
    fitted = model.fit(train_data, validation_data=val_data, epochs=config.epochs, callbacks=callbacks, verbose=0)
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    return TrainingResult(history=history, best_epoch=keep.best_epoch, best_val_loss=float(keep.best))


def train_gz2(model, train_data, val_data, config, progress=None) -> TrainingResult:
    """CNN1-3: mean squared error on the 37 unconditional GZ2 probabilities."""
    return train(model, train_data, val_data, config, loss="mse", progress=progress)


def train_ml(model, train_data, val_data, config, progress=None) -> TrainingResult:
    """CNN4: the weighted L1 loss on M/L; targets are (N, 2) arrays of (M/L, error)."""
    return train(model, train_data, val_data, config, loss=weighted_l1, progress=progress)


_EXTRACTORS: dict[tuple[int, tuple[str, ...]], tuple[keras.Model, keras.Model]] = {}


def predict_layers(model: keras.Model, layer_names: list[str], data: ImageBatches, symmetries: int = 1) -> dict[str, np.ndarray]:
    """Activations of the named layers for every sample of ``data``, as float32 (N, width) arrays.

    With ``symmetries`` > 1 (test-time augmentation) each activation is the mean over the
    first that many of the square's symmetries (:func:`pipeline.cnn.data.symmetry`): 4 are the
    quarter turns, 8 add their mirror images, and the mean over 4 or 8 does not change when
    the input turns by 90 degrees. The sub-model that outputs those layers is built once per
    model and list of names, so a worker extracting chunk after chunk does not trace a new
    graph every time.
    """
    if not 1 <= symmetries <= SYMMETRIES:
        raise ValueError(f"symmetries must be 1-{SYMMETRIES}, not {symmetries}")
    key = (id(model), tuple(layer_names))
    cached = _EXTRACTORS.get(key)
    if cached is not None and cached[0] is model:  # the model is kept, so its id cannot be reused
        extractor = cached[1]
    else:
        extractor = keras.Model(model.inputs, [model.get_layer(name).output for name in layer_names])
        _EXTRACTORS[key] = (model, extractor)
    total: list[np.ndarray] | None = None
    for k in range(symmetries):
        outputs = extractor.predict(data.under_symmetry(k) if k else data, verbose=0)
        if len(layer_names) == 1:
            outputs = [outputs]
        outputs = [np.asarray(out, dtype=np.float64).reshape(len(out), -1) for out in outputs]
        total = outputs if total is None else [t + o for t, o in zip(total, outputs, strict=True)]
    return {name: (out / symmetries).astype(np.float32) for name, out in zip(layer_names, total, strict=True)}
