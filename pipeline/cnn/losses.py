"""The paper's weighted L1 loss on M/L, with the 5% error floor (docs/stages.md)."""

from __future__ import annotations

import keras
from keras import ops

from pipeline.learning.metrics import ERROR_FLOOR


@keras.saving.register_keras_serializable(package="morphomass")
def weighted_l1(y_true, y_pred):
    """mean(|p - t| / max(e, 0.05 t)) per sample; ``y_true`` holds (t, e) in its two columns."""
    target, error = y_true[:, 0], y_true[:, 1]
    scale = ops.maximum(error, ERROR_FLOOR * target)
    return ops.abs(ops.reshape(y_pred, (-1,)) - target) / scale
