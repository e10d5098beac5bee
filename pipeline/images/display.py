"""Turn images into 8-bit pictures for people: montages and the web UI share one stretch."""

from __future__ import annotations

import io

import numpy as np
from astropy.visualization import AsinhStretch, ZScaleInterval
from PIL import Image


def asinh_display(data: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """uint8 picture of a flux image: zscale floor, asinh stretch, dark sky, bright galaxy.

    ``reference`` sets the limits instead (the raw cutout, so its star-subtracted version
    is shown with the same stretch).
    """
    data = np.nan_to_num(np.asarray(data, dtype=float), nan=0.0)
    limits_from = data if reference is None else np.nan_to_num(np.asarray(reference, dtype=float), nan=0.0)
    lo, hi = ZScaleInterval().get_limits(limits_from)
    hi = max(hi, float(np.percentile(limits_from, 99.7)))
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


def mark_points(picture: np.ndarray, xy: list[tuple[float, float]], radius: float) -> np.ndarray:
    """An RGB copy of a grey picture with a red circle around each (x, y) pixel position."""
    from PIL import ImageDraw

    image = Image.fromarray(picture).convert("RGB")
    draw = ImageDraw.Draw(image)
    for x, y in xy:
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius], outline=(230, 30, 30), width=max(1, picture.shape[0] // 128)
        )
    return np.asarray(image)
