"""The four networks of the paper's Fig. 3 as builder functions returning named keras.Models.

Every network takes one grey channel, (size, size, 1), as the image store holds it (CNN4
on colour: one channel per band or map, :func:`build_colour_ml_network`), and names the
layers features are taken from:

* ``pool``: the globally pooled convolutional activations (CNN1's are a feature set);
* ``dense``: the dense layer after it;
* ``gz2_logits``: the ReLU dense-37 layer (CNN4's "next-to-last activations");
* ``gz2``: the :class:`GZ2Normalisation` output, 37 unconditional probabilities;
* ``ml`` (CNN4 only): the dense-1 M/L output.

ImageNet weights are loaded only from a local file path (nothing is downloaded);
otherwise initialisation is random (Glorot uniform, Keras' default).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline import gz2
from pipeline.cnn.gz2_layer import GZ2Normalisation

#: Initial bias of the ReLU dense-37 layer. With Glorot weights and a zero bias, many of
#: its units start (and stay) at zero; a task whose answers are all zero gets constant
#: fractions and no gradient, and on a few thousand galaxies the network never beats
#: predicting the training mean. Starting every unit alive fixes that (validation RMSE
#: 0.114 against 0.143 on 1,237 synthetic training galaxies).
GZ2_LOGIT_BIAS = 1.0


def _gz2_head(x, dense_units: int):
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dense(
        gz2.N_ANSWERS, activation="relu", bias_initializer=keras.initializers.Constant(GZ2_LOGIT_BIAS), name="gz2_logits"
    )(x)
    return GZ2Normalisation(name="gz2")(x)


def build_custom_cnn(
    input_size: int = 69,
    width: float = 1.0,
    dense_units: int = 512,
    dropout: float = 0.25,
    name: str = "custom",
    channels: int = 1,
) -> keras.Model:
    """The paper's own network (CNN3): four valid-padded convolutions, a global max pool, two dense layers.

    conv 5x5/32, pool, conv 4x4/64, pool, conv 3x3/128, pool, conv 3x3/128, global max
    pool, dense 512, dense 37 + GZ2 normalisation; dropout after the pools (the paper gives
    no rate; 0.25 by default, less for the small training sets of the small presets).
    ``width`` scales the filter counts for the small presets; ``channels`` is the number of
    input images stacked per galaxy. Needs at least 46 px.
    """
    if input_size < 46:
        raise ValueError(f"the custom CNN needs inputs of at least 46 px (valid padding), got {input_size}")
    filters = [max(4, round(f * width)) for f in (32, 64, 128, 128)]
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = inputs
    for k, (n, kernel) in enumerate(zip(filters, (5, 4, 3, 3), strict=True)):
        x = layers.Conv2D(n, kernel, padding="valid", activation="relu", name=f"conv{k + 1}")(x)
        if k < 3:
            x = layers.MaxPooling2D(2, name=f"maxpool{k + 1}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"dropout{k + 1}")(x)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    return keras.Model(inputs, _gz2_head(x, dense_units), name=name)


def _imagenet_network(application, input_size: int, weights_path: str | Path | None, name: str) -> keras.Model:
    inputs = keras.Input((input_size, input_size, 1), name="image")
    rgb = layers.Concatenate(axis=-1, name="grey_to_rgb")([inputs, inputs, inputs])
    base = application(include_top=False, weights=None, input_shape=(input_size, input_size, 3))
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"ImageNet weights file {path} does not exist (nothing is downloaded)")
        base.load_weights(path)
    x = layers.GlobalAveragePooling2D(name="pool")(base(rgb))
    return keras.Model(inputs, _gz2_head(x, 256), name=name)


def build_resnet50(input_size: int = 197, weights_path: str | Path | None = None, name: str = "resnet50") -> keras.Model:
    """CNN1: ResNet50 (keras.applications) with global average pooling, dense-256, dense-37 and GZ2 layer."""
    return _imagenet_network(keras.applications.ResNet50, input_size, weights_path, name)


def build_xception(input_size: int = 128, weights_path: str | Path | None = None, name: str = "xception") -> keras.Model:
    """CNN2: Xception (keras.applications) with the same head as :func:`build_resnet50`."""
    if input_size < 71:
        raise ValueError(f"Xception needs inputs of at least 71 px, got {input_size}")
    return _imagenet_network(keras.applications.Xception, input_size, weights_path, name)


def build_ml_network(cnn1: keras.Model, name: str = "ml") -> keras.Model:
    """CNN4: CNN1's architecture and trained weights, the GZ2 layer replaced by a dense-1 M/L output."""
    clone = keras.models.clone_model(cnn1)
    clone.set_weights(cnn1.get_weights())
    output = layers.Dense(1, name="ml")(clone.get_layer("gz2_logits").output)
    return keras.Model(clone.inputs, output, name=name)


def build_colour_ml_network(source: keras.Model, options: dict, channels: int, name: str = "ml_colour") -> keras.Model:
    """CNN4 on colour: a custom network trained on GZ2 (``source``, built with ``options``) on
    ``channels`` stacked images, with a dense-1 M/L output.

    Every layer starts from the source's trained weights. The first convolution's kernel
    gets zeros for the added channels, so before training the network computes exactly
    CNN4's starting point on the g image, and training learns what colour adds.
    """
    if source.get_layer("conv1").kernel.shape[2] != 1:
        raise ValueError("the colour network starts from a one-channel (g) network")
    network = build_custom_cnn(input_size=int(source.inputs[0].shape[1]), channels=channels, name=f"{name}_base", **options)
    for layer in network.layers:
        weights = source.get_layer(layer.name).get_weights() if layer.weights else []
        if layer.name == "conv1":
            kernel, bias = weights
            padded = np.zeros((*kernel.shape[:2], channels, kernel.shape[3]), dtype=kernel.dtype)
            padded[:, :, :1] = kernel
            weights = [padded, bias]
        if weights:
            layer.set_weights(weights)
    output = layers.Dense(1, name="ml")(network.get_layer("gz2_logits").output)
    return keras.Model(network.input, output, name=name)


BUILDERS = {"custom": build_custom_cnn, "resnet50": build_resnet50, "xception": build_xception}


def build(architecture: str, input_size: int, **options) -> keras.Model:
    """Build a GZ2 network by architecture name (a preset's ``arch``)."""
    try:
        builder = BUILDERS[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(BUILDERS)}") from None
    return builder(input_size=input_size, **options)
