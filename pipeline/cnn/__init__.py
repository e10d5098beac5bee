"""The CNNs of Dobbels et al. 2019 (Fig. 3) in Keras 3, backend-neutral (keras and keras.ops only).

Import this package only where Keras is needed: importing Keras loads its backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what native libraries write straight to file descriptor 2 while they load.

    TensorFlow's absl logging prints start-up banners ("All log messages before
    absl::InitializeLog() ...", "oneDNN custom operations are on") that no environment
    variable turns off and that users read as errors. Python-level errors still raise
    normally; set ``MORPHOMASS_NATIVE_LOGS=1`` to see everything.
    """
    if os.environ.get("MORPHOMASS_NATIVE_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with _native_stderr_silenced():
    import keras  # noqa: E402,F401 - loads the backend here, quietly, for every module of this package

# tf.function's retracing notes: each of our networks is new, so retracing is expected.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
