"""A model field that stores a 1-D float32 vector as raw bytes.

Feature vectors and GZ2 probabilities are read in bulk into numpy matrices; one row per
number or a JSON list would cost tens of times the space and the parse time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import models


def pack_float32(values: Any) -> bytes:
    """Encode a 1-D sequence of numbers as little-endian float32 bytes."""
    array = np.asarray(values, dtype="<f4")
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {array.shape}")
    return array.tobytes()


def unpack_float32(raw: bytes | memoryview) -> np.ndarray:
    """Decode bytes written by :func:`pack_float32` into a float32 array."""
    return np.frombuffer(bytes(raw), dtype="<f4").copy()


class Float32ArrayField(models.BinaryField):
    """A BinaryField that reads and writes numpy float32 vectors."""

    description = "1-D float32 vector stored as bytes"

    def from_db_value(self, value, expression, connection):  # noqa: ARG002 - Django's signature
        if value is None:
            return None
        return unpack_float32(value)

    def to_python(self, value):
        if value is None or isinstance(value, np.ndarray):
            return value
        if isinstance(value, (bytes, memoryview, bytearray)):
            return unpack_float32(value)
        return np.asarray(value, dtype="<f4")

    def get_prep_value(self, value):
        if value is None:
            return None
        if isinstance(value, (bytes, memoryview, bytearray)):
            return bytes(value)
        return pack_float32(value)

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return "" if value is None else ",".join(f"{v:.7g}" for v in value)
