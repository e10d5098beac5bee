"""The image store on object storage: its rows cut into shard objects, read by byte ranges.

On storage without local paths (``MORPHOMASS_STORAGE=s3``) a store's array (the images, or
the galaxy ids beside them) is kept as shards: ``<name>.shards/<k>`` holds rows
``[k * SHARD_ROWS, (k + 1) * SHARD_ROWS)`` as raw little-endian values, as long as its
highest written row (a row never written reads as zeros). Rows keep their numbers, so the
database's record of a galaxy's row means the same on either storage.

* **Reading** one row is one ranged GET (a preview); a batch is one GET per shard it
  touches, whole when it needs many of the shard's rows, else by ranges of consecutive
  rows, the shards fetched in parallel.
* **Writing** replaces each shard it touches: read it, put the rows in, write it back whole.
  Two workers writing neighbouring rows of one shard would each write back the shard as
  they read it and lose the other's rows, so each rewrite holds a PostgreSQL advisory lock
  on (store, shard) for its read and write: writers of different shards never wait.

64 rows a shard: 0.6 MB at 69 px, 5 MB at 197 px (an S3 GET's fixed cost is worth that many
bytes), and a preprocessing chunk writes a few shards whole. Measured against zarr v3's sharding
codec on the same S3 server (benchmarks/README.md): a preview in half the time (one request, not
the shard's index and then the row) and random batches 1.6 times as fast, with no new dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from django.db import connection, transaction

from catalogue.services import faults, object_store

SHARD_ROWS = 64
#: Parallel GETs of a batch read (S3 answers each in tens of milliseconds).
READ_THREADS = 8


def shard_name(name: str, shard: int) -> str:
    return f"{name}.shards/{shard:08d}"


def shard_names(name: str, capacity: int) -> list[str]:
    """Every shard a store of ``capacity`` rows may have (for deleting it without listing the bucket)."""
    return [shard_name(name, k) for k in range(-(-capacity // SHARD_ROWS))]


def write_rows(name: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Put ``values[i]`` (each row's values, of one dtype and shape) in row ``rows[i]`` of the array ``name``."""
    rows = np.asarray(rows, dtype=np.int64)
    values = np.ascontiguousarray(values)
    size = values[0].nbytes if len(values) else 0
    for shard in np.unique(rows // SHARD_ROWS).tolist():
        mine = np.flatnonzero(rows // SHARD_ROWS == shard)
        with _shard_lock(name, shard):
            current = bytearray(object_store.read_whole(shard_name(name, shard)))
            faults.during_shard_rewrite()
            local = rows[mine] - shard * SHARD_ROWS
            end = (int(local.max()) + 1) * size
            if len(current) < end:
                current.extend(bytes(end - len(current)))
            for i, row in zip(mine.tolist(), local.tolist(), strict=True):
                current[row * size : (row + 1) * size] = values[i].tobytes()
            object_store.replace(shard_name(name, shard), bytes(current))


def read_rows(name: str, rows: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The values of ``rows`` of the array ``name`` (zeros where never written), in the order asked."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), *shape), dtype=dtype)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    shards = np.unique(rows // SHARD_ROWS).tolist()

    def fetch(shard: int) -> tuple[int, Callable[[int], bytes]]:
        wanted = np.unique(rows[rows // SHARD_ROWS == shard] - shard * SHARD_ROWS).tolist()
        if len(wanted) > SHARD_ROWS // 4:
            whole = object_store.read_whole(shard_name(name, shard))
            return shard, lambda r: whole[r * size : (r + 1) * size]
        pieces: dict[int, bytes] = {}
        for first, last in _runs(wanted):
            block = object_store.read_range(shard_name(name, shard), first * size, (last - first + 1) * size)
            for r in range(first, last + 1):
                pieces[r] = block[(r - first) * size : (r - first + 1) * size]
        return shard, lambda r: pieces.get(r, b"")

    fetched = map(fetch, shards) if len(shards) == 1 else _pool().map(fetch, shards)
    for shard, piece in fetched:
        for i in np.flatnonzero(rows // SHARD_ROWS == shard).tolist():
            data = piece(int(rows[i]) - shard * SHARD_ROWS)
            if len(data) == size:
                out[i] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return out


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """The threads that fetch a batch's shards, made once per process (threads are not free either);
    a process forked from one that had them (a prefork worker's child) makes its own."""
    global _POOL  # noqa: PLW0603 - one pool per process
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="image-shards"))
    return _POOL[1]


def _runs(sorted_rows: list[int]) -> list[tuple[int, int]]:
    """Consecutive rows as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for row in sorted_rows:
        if runs and runs[-1][1] == row - 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    return runs


@contextmanager
def _shard_lock(name: str, shard: int) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock on (array, shard) while a shard is rewritten (a transaction of its own).

    Elsewhere (SQLite: one machine, the demo) nothing is locked: object storage there is for trying it out.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [name, shard])
        yield
