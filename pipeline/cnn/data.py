"""Batches streamed from the image store, with the paper's augmentation done on the fly.

The dataset holds only row numbers; each batch reads its images through a callable (the
image store's ``read_rows``), so the survey is never in memory. Augmentation (rotation
0-360 deg, zoom 0.7-1.3, horizontal and vertical flips) is one affine resampling per
image about its centre, in numpy, so it does not depend on the Keras backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
from scipy import ndimage

ReadImages = Callable[[np.ndarray], np.ndarray]  # rows -> (N, size, size) float32

ZOOM_RANGE = (0.7, 1.3)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random rotation, zoom and flip of a square image about its centre (edges reflected)."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    zoom = rng.uniform(*ZOOM_RANGE)
    flip_x = -1.0 if rng.random() < 0.5 else 1.0
    flip_y = -1.0 if rng.random() < 0.5 else 1.0
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # Output pixel -> input pixel: flip, then rotate and scale by 1/zoom.
    matrix = np.array([[cos * flip_y, -sin * flip_x], [sin * flip_y, cos * flip_x]])
    centre = (np.array(image.shape) - 1) / 2.0
    offset = centre - matrix @ centre
    return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="reflect")


class ImageBatches(keras.utils.PyDataset):
    """(images, targets) batches for ``model.fit``; (images,) when there are no targets.

    Parameters
    ----------
    read_images : rows -> (N, size, size) float32, e.g. the image store's reader.
    rows : the store row of each sample.
    targets : (N, ...) array or None.
    shuffle, augment : for training; off for validation and feature extraction.
    """

    def __init__(
        self,
        read_images: ReadImages,
        rows: np.ndarray,
        targets: np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.read_images, self.rows = read_images, np.asarray(rows, dtype=np.int64)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(self.rows))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.read_images(self.rows[picked])
        if self.augment:
            images = np.stack([augment(image, self.rng) for image in images])
        images = images[..., None].astype(np.float32, copy=False)
        if self.targets is None:
            return (images,)
        return images, self.targets[picked]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)
