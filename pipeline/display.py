"""Turn images into 8-bit pictures for people: montages and the web UI share one stretch."""

from __future__ import annotations

import io

import numpy as np
from astropy.visualization import AsinhStretch, ZScaleInterval
from PIL import Image


def asinh_display(data: np.ndarray) -> np.ndarray:
    """uint8 picture of a flux image: zscale floor, asinh stretch, dark sky, bright galaxy."""
    data = np.nan_to_num(np.asarray(data, dtype=float), nan=0.0)
    lo, hi = ZScaleInterval().get_limits(data)
    hi = max(hi, float(np.percentile(data, 99.7)))
    scaled = AsinhStretch(0.05)(np.clip((data - lo) / (hi - lo + 1e-12), 0, 1))
    return (255 * scaled).astype(np.uint8)


def linear_display(unit_image: np.ndarray) -> np.ndarray:
    """uint8 picture of an image already in [0, 1] (the log-scaled network input)."""
    return (255 * np.clip(np.nan_to_num(unit_image), 0, 1)).astype(np.uint8)


def png_bytes(picture: np.ndarray, size: int | None = None) -> bytes:
    """Encode a uint8 picture as PNG, optionally resized (Lanczos) to size x size."""
    image = Image.fromarray(picture)
    if size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
