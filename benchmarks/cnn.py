"""CNN throughput: training and inference images per second for each network of each preset.

Random images of each network's input size (CNN4 on colour: two channels) go through ``model.fit`` (the GZ2 loss) and
``model.predict`` in batches; the first batch (graph building) is not timed. Prints one
JSON object with the device, Keras backend and precision. Run from the repository root:

    .venv/bin/python benchmarks/cnn.py --presets test,fast,paper
    KERAS_BACKEND=jax .venv/bin/python benchmarks/cnn.py --presets paper --mixed-precision --batch 256   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def device_description() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"GPU: {gpus[0].name}" if gpus else f"CPU: {os.cpu_count()} cores"
        if backend == "jax":
            import jax

            return f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
        if backend == "torch":
            import torch

            return f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f"CPU: {os.cpu_count()} cores"
    except Exception as exc:  # a benchmark reports what it can
        return f"unknown ({exc})"
    return "unknown"


def measure(model, size: int, batch: int, train_batches: int, infer_batches: int, channels: int = 1) -> dict:
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((batch * max(train_batches, infer_batches), size, size, channels), dtype=np.float32)
    y = rng.random((len(x), model.output.shape[-1]), dtype=np.float32)
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="mse")
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # build and warm up
    start = time.perf_counter()
    model.fit(x[: batch * train_batches], y[: batch * train_batches], batch_size=batch, epochs=1, verbose=0)
    train_s = time.perf_counter() - start
    model.predict(x[:batch], batch_size=batch, verbose=0)
    start = time.perf_counter()
    model.predict(x[: batch * infer_batches], batch_size=batch, verbose=0)
    infer_s = time.perf_counter() - start
    return {
        "train_images_per_s": round(batch * train_batches / train_s, 1),
        "inference_images_per_s": round(batch * infer_batches / infer_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="test,fast,paper")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-batches", type=int, default=4)
    parser.add_argument("--infer-batches", type=int, default=8)
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU)")
    args = parser.parse_args()
    import keras

    from pipeline.cnn import networks
    from pipeline.presets import CNN_ROLES, COLOUR_ROLE, cnn_network, network_roles, preset

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    results = {}
    for preset_name in args.presets.split(","):
        config = preset(preset_name)
        colour = [COLOUR_ROLE] if COLOUR_ROLE in network_roles(config) else []
        for role in [*CNN_ROLES[:3], *colour]:  # CNN4 is CNN1's network; CNN4 on colour is its source's on more channels
            network = cnn_network(config, role)
            channels = len(network.get("channels", ("g",)))
            keras.backend.clear_session()
            options = {**network["options"], **({"channels": channels} if channels > 1 else {})}
            model = networks.build(network["arch"], network["size"], **options)
            speed = measure(model, network["size"], args.batch, args.train_batches, args.infer_batches, channels)
            results[f"{preset_name}/{role}_{network['arch']}_{network['size']}px"] = {"params": model.count_params(), **speed}
    print(
        json.dumps(
            {
                "benchmark": "cnn",
                "device": device_description(),
                "backend": keras.backend.backend(),
                "precision": keras.mixed_precision.global_policy().name,
                "batch": args.batch,
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
