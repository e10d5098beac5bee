"""The Galaxy Zoo 2 normalisation layer: 37 non-negative outputs -> valid unconditional probabilities.

Each task's answers are divided by their sum (the fractions given the task was asked),
then multiplied by the probability that the task was asked, which is the sum of the
unconditional probabilities of the answers leading to it (Dieleman et al. 2015; the
paper's Sect. 3.3). Everything comes from :data:`pipeline.gz2.TASKS`.
"""

from __future__ import annotations

import keras
from keras import ops

from pipeline import gz2

#: Added to every answer before normalising: a task whose outputs are all zero (a dead
#: ReLU) gets uniform fractions and a gradient instead of 0/0.
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="morphomass")
class GZ2Normalisation(keras.layers.Layer):
    """Maps a (batch, 37) non-negative tensor to unconditional GZ2 answer probabilities."""

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        columns: list = [None] * gz2.N_ANSWERS
        for task in gz2.TASKS:  # parents come before children in TASKS
            block = inputs[:, gz2.TASK_SLICES[task.id]] + EPSILON
            fractions = block / ops.sum(block, axis=1, keepdims=True)
            if task.asked_after:
                asked = sum(columns[gz2.ANSWER_INDEX[a]] for a in task.asked_after)
                fractions = fractions * ops.expand_dims(asked, 1)
            for k in range(len(task.answers)):
                columns[gz2.TASK_SLICES[task.id].start + k] = fractions[:, k]
        return ops.stack(columns, axis=1)
