"""The image store: a survey's log-scaled images at one resolution in one memory-mappable array.

Layout (storage names under ``arrays/<survey>/<res>px/``):

* ``images.f16``: raw little-endian float16, shape (capacity, res, res), C order;
* ``galaxy_ids.i8``: raw little-endian int64, shape (capacity,), the galaxy id of each row
  (0 for a row never allocated), so the file can be read without the database.

A galaxy's row is recorded in :class:`~catalogue.models.StoredImage`. Rows are allocated
when a run starts, under a row lock on the :class:`~catalogue.models.ImageStore` record;
chunks then write their own rows with positioned writes, so concurrent chunks never touch
the same bytes. A galaxy keeps its row for good: re-preprocessing overwrites it in place,
so nothing a row points to is ever deleted and no superseded copy is left to reclaim.

Where the storage has local paths (the default ``FileSystemStorage``, a shared filesystem)
the store is those two files, memory-mapped to read and written with positioned writes. On
object storage (``MORPHOMASS_STORAGE=s3``) the same rows live in shard objects of 64 rows,
read by byte ranges and rewritten under a lock per shard (:mod:`catalogue.services.image_shards`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from catalogue.models import Galaxy, ImageStore, StoredImage, Survey
from catalogue.services import image_shards, object_store

IMAGE_DTYPE = np.dtype("<f2")
ID_DTYPE = np.dtype("<i8")


def _local_path(name: str) -> str:
    return default_storage.path(name)


def row_bytes(resolution: int) -> int:
    return resolution * resolution * IMAGE_DTYPE.itemsize


def delete_store_files(sender, instance: ImageStore, **_kwargs) -> None:  # noqa: ARG001 - signal signature
    """Remove a store's files once the deletion of its record (a survey's, say) has committed.

    Connected to ``post_delete`` of :class:`ImageStore` in ``CatalogueConfig.ready``: the
    database records are the ledger of what exists, so no folder is ever listed to guess.
    """
    names = [instance.images_name, instance.ids_name]
    if not object_store.has_local_paths():
        names = [shard for name in names for shard in image_shards.shard_names(name, instance.capacity)]
    _MAPS.clear()

    def delete() -> None:
        object_store.delete_many(names)

    transaction.on_commit(delete)


def get_or_create_store(survey: Survey, resolution: int, channel: str = ImageStore.Channel.G) -> ImageStore:
    """The survey's store of ``channel`` at ``resolution``, created (with empty files) on first use."""
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 px, got {resolution}")
    channel = ImageStore.Channel(channel)
    root = f"arrays/{survey.name}/{resolution}px" + ("" if channel == ImageStore.Channel.G else f"/{channel.value}")
    store, created = ImageStore.objects.get_or_create(
        survey=survey,
        resolution=resolution,
        channel=channel,
        defaults={"images_name": f"{root}/images.f16", "ids_name": f"{root}/galaxy_ids.i8"},
    )
    if object_store.has_local_paths() and (created or not default_storage.exists(store.images_name)):
        for name in (store.images_name, store.ids_name):
            if not default_storage.exists(name):
                default_storage.save(name, ContentFile(b""))
    return store


def allocate_rows(store: ImageStore, galaxy_ids: Iterable[int]) -> dict[int, int]:
    """Give each galaxy without a row in ``store`` the next free one; returns galaxy id -> row.

    Must run inside a transaction: the store record is locked until it commits, so two
    runs never hand out the same row. The files grow to the new capacity at once and the
    galaxy ids are written beside the images.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("allocate_rows must run inside transaction.atomic()")
    galaxy_ids = list(dict.fromkeys(int(g) for g in galaxy_ids))
    store = ImageStore.objects.select_for_update().get(pk=store.pk)
    rows = dict(StoredImage.objects.filter(store=store, galaxy_id__in=galaxy_ids).values_list("galaxy_id", "row"))
    new = [g for g in galaxy_ids if g not in rows]
    if new:
        first = store.capacity
        StoredImage.objects.bulk_create(
            [StoredImage(store=store, galaxy_id=g, row=first + k) for k, g in enumerate(new)], batch_size=5000
        )
        rows.update({g: first + k for k, g in enumerate(new)})
        store.capacity = first + len(new)
        _grow_files(store)
        _write_ids(store, first, np.asarray(new, dtype=ID_DTYPE))
        ImageStore.objects.filter(pk=store.pk).update(capacity=store.capacity)
    return rows


def _grow_files(store: ImageStore) -> None:
    if not object_store.has_local_paths():
        return  # shards grow as rows are written
    for name, size in (
        (store.images_name, store.capacity * row_bytes(store.resolution)),
        (store.ids_name, store.capacity * ID_DTYPE.itemsize),
    ):
        path = _local_path(name)
        with open(path, "r+b") as fh:
            if os.fstat(fh.fileno()).st_size < size:
                os.ftruncate(fh.fileno(), size)


def _write_ids(store: ImageStore, first_row: int, ids: np.ndarray) -> None:
    if not object_store.has_local_paths():
        image_shards.write_rows(store.ids_name, np.arange(first_row, first_row + len(ids)), ids.astype(ID_DTYPE))
        return
    fd = os.open(_local_path(store.ids_name), os.O_WRONLY)
    try:
        os.pwrite(fd, ids.astype(ID_DTYPE).tobytes(), first_row * ID_DTYPE.itemsize)
    finally:
        os.close(fd)


def write_images(store: ImageStore, rows: np.ndarray, images: np.ndarray) -> None:
    """Write (N, res, res) images to their allocated rows (positioned writes, any order).

    Consecutive rows are written in one call. The rows become visible to readers when
    the caller marks them ``written`` in the same transaction as the rest of its results.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if images.shape != (len(rows), store.resolution, store.resolution):
        raise ValueError(f"expected images of shape ({len(rows)}, {store.resolution}, {store.resolution}), got {images.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= store.capacity):
        raise ValueError(f"rows {rows.min()}..{rows.max()} outside the store's {store.capacity} allocated rows")
    data = np.ascontiguousarray(images, dtype=IMAGE_DTYPE)
    if not object_store.has_local_paths():
        image_shards.write_rows(store.images_name, rows, data)
        return
    size = row_bytes(store.resolution)
    order = np.argsort(rows)
    fd = os.open(_local_path(store.images_name), os.O_WRONLY)
    try:
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and rows[order[stop]] == rows[order[stop - 1]] + 1:
                stop += 1
            block = data[order[start:stop]]
            os.pwrite(fd, block.tobytes(), int(rows[order[start]]) * size)
            start = stop
    finally:
        os.close(fd)


_MAPS: dict[tuple[str, int], np.memmap] = {}


def _memmap(store: ImageStore) -> np.ndarray | None:
    """A read-only memory map of the store's images (cached per process and file size)."""
    try:
        path = default_storage.path(store.images_name)
    except NotImplementedError:
        return None
    size = os.path.getsize(path)
    n_rows = size // row_bytes(store.resolution)
    key = (path, size)
    cached = _MAPS.get(key)
    if cached is None:
        if n_rows == 0:
            return np.empty((0, store.resolution, store.resolution), IMAGE_DTYPE)
        for old in [k for k in _MAPS if k[0] == path]:
            del _MAPS[old]
        cached = np.memmap(path, dtype=IMAGE_DTYPE, mode="r", shape=(n_rows, store.resolution, store.resolution))
        _MAPS[key] = cached
    return cached


def read_rows(store: ImageStore, rows: np.ndarray) -> np.ndarray:
    """(N, res, res) float32 images of the given rows, in the order asked.

    Only the asked rows are read: through a memory map where storage is local (sorted,
    so the reads go forward through the file), else by byte ranges of the shards.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), store.resolution, store.resolution), dtype=np.float32)
    if not len(rows):
        return out
    mapped = _memmap(store)
    if mapped is not None:
        if rows.max() >= len(mapped):
            raise ValueError(f"row {rows.max()} beyond the {len(mapped)} rows of {store.images_name}")
        order = np.argsort(rows, kind="stable")
        out[order] = mapped[rows[order]]
        return out
    out[:] = image_shards.read_rows(store.images_name, rows, IMAGE_DTYPE, (store.resolution, store.resolution))
    return out


def rows_of(
    survey: Survey, resolution: int, galaxy_ids: Iterable[int], channel: str = ImageStore.Channel.G
) -> tuple[ImageStore, np.ndarray]:
    """The store and the row of each galaxy (in the order given), all of which must have a written image.

    Raises
    ------
    LookupError
        naming the galaxies that have no written image at this resolution.
    """
    galaxy_ids = [int(g) for g in galaxy_ids]
    store, found, rows = written_rows(survey, resolution, galaxy_ids, channel)
    what = "images" if channel == ImageStore.Channel.G else f"{ImageStore.Channel(channel).label}s"
    if store is None:
        raise LookupError(f"survey {survey.name} has no {what} at {resolution} px; run preprocessing at that resolution")
    if len(found) < len(galaxy_ids):
        missing = next(g for g in galaxy_ids if g not in set(found.tolist()))
        raise LookupError(f"{len(galaxy_ids) - len(found)} galaxies have no {resolution} px {what}, e.g. galaxy id {missing}")
    return store, rows


def load_log_images(galaxies: Iterable[Galaxy], resolution: int, channel: str = ImageStore.Channel.G) -> np.ndarray:
    """(N, res, res) float32 images of ``channel`` (log-scaled g by default) of the given galaxies (one survey), in order."""
    galaxies = list(galaxies)
    if not galaxies:
        return np.empty((0, resolution, resolution), np.float32)
    surveys = {g.survey_id for g in galaxies}
    if len(surveys) != 1:
        raise ValueError(f"galaxies from {len(surveys)} surveys; load one survey at a time")
    store, rows = rows_of(galaxies[0].survey, resolution, [g.pk for g in galaxies], channel)
    return read_rows(store, rows)


def stored_resolutions(galaxy: Galaxy) -> list[int]:
    """Resolutions (px) at which the galaxy has a written g image, ascending."""
    written = StoredImage.objects.filter(galaxy=galaxy, written=True, store__channel=ImageStore.Channel.G)
    return sorted(written.values_list("store__resolution", flat=True))


def written_rows(
    survey: Survey, resolution: int, galaxy_ids: Iterable[int], channel: str = ImageStore.Channel.G
) -> tuple[ImageStore | None, np.ndarray, np.ndarray]:
    """The galaxies (of those given, in that order) that have a written image of ``channel``, and their rows.

    Returns (store, galaxy ids, rows); the store is None when the survey has none at that size.
    """
    galaxy_ids = [int(g) for g in galaxy_ids]
    store = ImageStore.objects.filter(survey=survey, resolution=resolution, channel=channel).first()
    if store is None:
        return None, np.empty(0, np.int64), np.empty(0, np.int64)
    found = dict(StoredImage.objects.filter(store=store, galaxy_id__in=galaxy_ids, written=True).values_list("galaxy_id", "row"))
    kept = [g for g in galaxy_ids if g in found]
    return store, np.array(kept, dtype=np.int64), np.array([found[g] for g in kept], dtype=np.int64)


def row_reader(store: ImageStore):
    """rows -> (N, res, res) float32 images: what the CNN batches read through."""
    return lambda rows: read_rows(store, rows)


def stacked_rows(
    survey: Survey, resolution: int, galaxy_ids: Iterable[int], channels: tuple[str, ...]
) -> tuple[list[ImageStore] | None, np.ndarray, np.ndarray]:
    """The galaxies (of those given, in that order) with a written image of every channel, and their rows.

    Returns (stores, galaxy ids, (N, channels) rows); the stores are None when the survey
    lacks a store of one of the channels at that size. One channel is :func:`written_rows`
    with its rows as a column.
    """
    kept = [int(g) for g in galaxy_ids]
    stores, per_channel = [], []
    for channel in channels:
        store, found, rows = written_rows(survey, resolution, kept, channel)
        if store is None:
            return None, np.empty(0, np.int64), np.empty((0, len(channels)), np.int64)
        stores.append(store)
        per_channel.append(dict(zip(found.tolist(), rows.tolist(), strict=True)))
        kept = found.tolist()
    ids = np.array(kept, dtype=np.int64)
    rows = np.array([[rows[g] for rows in per_channel] for g in kept], dtype=np.int64).reshape(len(kept), len(channels))
    return stores, ids, rows


def stacked_reader(stores: list[ImageStore]):
    """(N, channels) rows -> (N, res, res, channels) float32, a colour map's NaN (no signal) as 0:
    what a network on several channels reads through. One store reads as :func:`row_reader`."""
    if len(stores) == 1:
        return lambda rows: read_rows(stores[0], np.asarray(rows)[:, 0])

    def read(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        planes = [read_rows(store, rows[:, c]) for c, store in enumerate(stores)]
        return np.nan_to_num(np.stack(planes, axis=-1), nan=0.0)

    return read


def staged_reader(stores: list[ImageStore], rows: np.ndarray, block: int = 1024) -> tuple:
    """What CNN training reads through for many epochs: :func:`stacked_reader` and ``rows`` where the
    store is on local paths; on object storage, the rows fetched once into a local temporary file and
    a reader of it with the rows' positions there, so every epoch after the first costs no GET.

    Returns (reader, rows to give it), as :func:`stacked_reader` and ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    read = stacked_reader(stores)
    if object_store.has_local_paths() or not len(rows):
        return read, rows
    resolution = stores[0].resolution
    shape = (len(rows), resolution, resolution) + ((len(stores),) if len(stores) > 1 else ())
    spool = tempfile.TemporaryFile(prefix="morphomass-staged-")  # gone when the reader is
    staged = np.memmap(spool, dtype=IMAGE_DTYPE, mode="w+", shape=shape)
    for start in range(0, len(rows), block):
        staged[start : start + block] = read(rows[start : start + block])
    staged.flush()

    def reader(positions: np.ndarray, staged=staged, spool=spool) -> np.ndarray:  # noqa: ARG001 - keeps the file open
        return np.asarray(staged[np.asarray(positions, dtype=np.int64)[:, 0]], dtype=np.float32)

    return reader, np.arange(len(rows), dtype=np.int64).reshape(-1, 1)
