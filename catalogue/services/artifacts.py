"""Model artifacts (.keras files, pickled GBMs) through Django's storage API, written atomically.

A model is saved to a local temporary file first and only then handed to storage under a
fresh name, and its database row is written after that: a reader never finds a row that
points to a half-written file. Loaded models are cached per process by storage name.
"""

from __future__ import annotations

import os
import pickle
import tempfile

from django.core.files import File
from django.core.files.storage import default_storage

_LOADED: dict[str, object] = {}

#: Where the science modules a stored model names now live (pickles record a class by its module):
#: the flat ``pipeline`` package was grouped into images, learning and bundles on 2026-12-06.
MOVED_MODULES = {
    "pipeline.gbm": "pipeline.learning.gbm",
    "pipeline.powerlaw": "pipeline.learning.powerlaw",
    "pipeline.intervals": "pipeline.learning.intervals",
    "pipeline.support": "pipeline.learning.support",
    "pipeline.regression": "pipeline.learning.regression",
    "pipeline.learning": "pipeline.learning.data",
    "pipeline.metrics": "pipeline.learning.metrics",
    "pipeline.model_selection": "pipeline.learning.model_selection",
}
#: Classes that moved to another module than the rest of theirs.
MOVED_CLASSES = {("pipeline.regression", "ModelSpec"): "pipeline.learning.named_models"}


class _Unpickler(pickle.Unpickler):
    """Reads pickles written before a science module moved, finding each class where it lives now."""

    def find_class(self, module: str, name: str):
        module = MOVED_CLASSES.get((module, name)) or MOVED_MODULES.get(module, module)
        return super().find_class(module, name)


def _save_through_temporary_file(write, name: str, suffix: str) -> str:
    """``write(path)`` a local file, then hand it to storage under ``name``; returns the name used."""
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            return default_storage.save(name, File(fh))
    finally:
        os.unlink(tmp)


def save_keras_model(model, name: str) -> str:
    """Save a keras.Model under storage ``name`` (a suffix is added if taken); returns the name used."""
    return _save_through_temporary_file(model.save, name, ".keras")


def load_keras_model(name: str):
    """The keras.Model stored under ``name`` (cached: feature chunks load each model once per worker)."""
    model = _LOADED.get(name)
    if model is not None:
        return model
    import pipeline.cnn.gz2_layer  # noqa: F401 - registers the custom layer and loss for loading
    import pipeline.cnn.losses  # noqa: F401
    from pipeline.cnn import keras  # loaded quietly there

    fd, tmp = tempfile.mkstemp(suffix=".keras")
    os.close(fd)
    try:
        with default_storage.open(name, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        model = keras.models.load_model(tmp, compile=False)
    finally:
        os.unlink(tmp)
    _LOADED[name] = model
    return model


def save_pickle(obj, name: str) -> str:
    """Pickle ``obj`` (a fitted GBM or baseline) under storage ``name``; returns the name used.

    Only this service's own workers write and read these files: pickles from elsewhere
    must never be loaded.
    """

    def write(path: str) -> None:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)

    return _save_through_temporary_file(write, name, ".pkl")


def load_pickle(name: str):
    """The object pickled under storage ``name`` by :func:`save_pickle` (cached per process)."""
    obj = _LOADED.get(name)
    if obj is None:
        with default_storage.open(name, "rb") as fh:
            obj = _Unpickler(fh).load()  # written by save_pickle on this service's storage only
        _LOADED[name] = obj
    return obj
