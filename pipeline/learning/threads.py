"""How many threads each LightGBM fit uses: one setting for every fit of the pipeline.

LightGBM's OpenMP threads spin while they wait for one another. Two suit a worker with two
cores to itself; where more busy processes than cores share a machine (several workers on
one host, the test suite's parallel processes) spinning threads take the cores from each
other: the four fits of tests/test_intervals.py took 103 s instead of 13 s beside two busy
processes. ``MORPHOMASS_GBM_THREADS`` sets the number for such a host; it is read at each
fit, so a process may change it.
"""

from __future__ import annotations

import os

GBM_THREADS_ENV = "MORPHOMASS_GBM_THREADS"
DEFAULT_GBM_THREADS = 2


def gbm_threads() -> int:
    """Threads per LightGBM fit: ``MORPHOMASS_GBM_THREADS``, else 2. Raises ValueError on anything but a positive integer."""
    raw = os.environ.get(GBM_THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_GBM_THREADS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{GBM_THREADS_ENV}={raw!r}: give a whole number of threads, 1 or more")
    return int(raw)
