"""Stored models: a model pickled before the science modules were grouped still loads."""

from __future__ import annotations

import io
import pickle

import numpy as np

from catalogue.services.artifacts import MOVED_MODULES, _Unpickler
from pipeline.learning.gbm import ConstantML
from pipeline.learning.named_models import NAMED


def test_a_model_pickled_under_the_old_module_names_loads_as_the_same_classes():
    fitted = ConstantML().fit(np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, 4.0]))
    text = pickle.dumps({"spec": NAMED["g_morph"], "estimator": fitted}, protocol=0)
    old = text.replace(b"cpipeline.learning.named_models\nModelSpec", b"cpipeline.regression\nModelSpec")
    old = old.replace(b"cpipeline.learning.gbm\n", b"cpipeline.gbm\n")
    assert b"pipeline.learning" not in old  # as written before the move
    loaded = _Unpickler(io.BytesIO(old)).load()
    assert loaded["spec"] == NAMED["g_morph"] and type(loaded["spec"]) is type(NAMED["g_morph"])
    assert (
        type(loaded["estimator"]) is ConstantML
        and loaded["estimator"].predict(np.zeros((1, 1)))[0] == fitted.predict(np.zeros((1, 1)))[0]
    )


def test_every_moved_module_exists_where_the_table_says():
    import importlib

    for new in MOVED_MODULES.values():
        importlib.import_module(new)
