"""Batches streamed from the image store, with the paper's augmentation done on the fly.

The dataset holds only row numbers; each batch reads its images through a callable (the
image store's ``read_rows``), so the survey is never in memory. Augmentation (rotation
0-360 deg, zoom 0.7-1.3, horizontal and vertical flips) is one affine resampling per
image about its centre, in numpy, so it does not depend on the Keras backend.

For test-time augmentation a dataset can also show every image under one of the square's
8 symmetries (:func:`symmetry`): exact pixel permutations, no resampling, so a network's
features averaged over all 8 do not change when the galaxy is turned by 90 degrees or
mirrored (:func:`pipeline.cnn.training.predict_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
from scipy import ndimage

ReadImages = Callable[[np.ndarray], np.ndarray]  # rows -> (N, size, size) or (N, size, size, channels) float32

ZOOM_RANGE = (0.7, 1.3)
#: The square's symmetries (the dihedral group of order 8): four quarter turns, each with or without a flip.
SYMMETRIES = 8


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random rotation, zoom and flip of a square image about its centre (edges reflected);
    a (size, size, channels) stack gets the same one in every channel."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    zoom = rng.uniform(*ZOOM_RANGE)
    flip_x = -1.0 if rng.random() < 0.5 else 1.0
    flip_y = -1.0 if rng.random() < 0.5 else 1.0
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # Output pixel -> input pixel: flip, then rotate and scale by 1/zoom.
    matrix = np.array([[cos * flip_y, -sin * flip_x], [sin * flip_y, cos * flip_x]])
    centre = (np.array(image.shape[:2]) - 1) / 2.0
    offset = centre - matrix @ centre

    def resample(plane: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(plane, matrix, offset=offset, order=1, mode="reflect")

    if image.ndim == 3:
        return np.stack([resample(image[..., c]) for c in range(image.shape[2])], axis=-1)
    return resample(image)


def symmetry(images: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0-7) of the square's 8 symmetries of (N, size, size[, channels]) images: k mod 4
    quarter turns, then a left-right flip for k >= 4. k = 0 is the identity."""
    if not 0 <= k < SYMMETRIES:
        raise ValueError(f"symmetry {k} is not one of the square's {SYMMETRIES} (0-{SYMMETRIES - 1})")
    turned = np.rot90(images, k % 4, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if k >= 4 else turned)


class ImageBatches(keras.utils.PyDataset):
    """(images, targets) batches for ``model.fit``; (images,) when there are no targets.

    Parameters
    ----------
    read_images : rows -> (N, size, size) float32, e.g. the image store's reader, or
        (N, size, size, channels) for stacked channels.
    rows : the store row of each sample, or (N, channels) rows, one per channel's store.
    targets : (N, ...) array or None.
    shuffle, augment : for training; off for validation and feature extraction.
    symmetry : show every image under this one of the square's 8 symmetries (:func:`symmetry`).
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
        symmetry: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.read_images, self.rows = read_images, np.asarray(rows, dtype=np.int64)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.symmetry = int(symmetry)
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
        if self.symmetry:
            images = symmetry(images, self.symmetry)
        images = (images[..., None] if images.ndim == 3 else images).astype(np.float32, copy=False)
        if self.targets is None:
            return (images,)
        return images, self.targets[picked]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)

    def under_symmetry(self, k: int) -> ImageBatches:
        """The same samples, in the same order, each image under the square's k-th symmetry."""
        if self.shuffle or self.augment:
            raise ValueError("test-time symmetries are for feature extraction: no shuffling or augmentation")
        return ImageBatches(self.read_images, self.rows, self.targets, self.batch_size, symmetry=k)
