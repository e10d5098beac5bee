"""Metrics as JSON that every database accepts: NaN and infinities become null.

PostgreSQL's jsonb (like JSON itself) has no NaN; a metric that is undefined (no galaxy of
a class, a constant feature's importance) is stored as null and shown as "n/a".
"""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """A copy of ``value`` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
