"""Selectors: read-only queries shared by views, the API and commands."""

from __future__ import annotations

from functools import reduce
from operator import or_

import numpy as np
from django.db.models import ExpressionWrapper, F, FloatField, Q, QuerySet

from catalogue.models import FeatureVector, Galaxy
from pipeline.sky import cone_index_ranges, unit_vector


def galaxies_in_cone(ra: float, dec: float, radius_deg: float, queryset: QuerySet[Galaxy] | None = None) -> QuerySet[Galaxy]:
    """Galaxies within ``radius_deg`` of (ra, dec), all in degrees, as one SQL query.

    The HEALPix ranges narrow the candidates through the (survey, healpix) index; the
    exact test is a dot product of unit vectors against cos(radius), evaluated by the
    database, so the result is correct across RA = 0/360 and at the poles, and nothing
    goes back to the database as a list of ids.
    """
    queryset = Galaxy.objects.all() if queryset is None else queryset
    ranges = cone_index_ranges(float(ra) % 360.0, float(dec), float(radius_deg))
    covering = reduce(or_, (Q(healpix__gte=lo, healpix__lt=hi) for lo, hi in ranges))
    cx, cy, cz = (float(v) for v in unit_vector(float(ra), float(dec)))
    # cos(r) loses precision near r = 0 (1 - r^2/2); compare the chord length instead:
    # |x - c|^2 = 2 - 2 x.c <= (2 sin(r/2))^2, exact at every radius.
    chord2 = (2.0 * np.sin(np.deg2rad(float(radius_deg)) / 2.0)) ** 2
    dx, dy, dz = F("sky_x") - cx, F("sky_y") - cy, F("sky_z") - cz
    distance2 = ExpressionWrapper(dx * dx + dy * dy + dz * dz, output_field=FloatField())
    return queryset.filter(covering).alias(cone_chord2=distance2).filter(cone_chord2__lte=chord2)


def feature_matrix(feature_sets, galaxy_ids, drop: bool = True) -> tuple[np.ndarray, list[str]]:
    """The features of ``feature_sets`` for ``galaxy_ids``: a float32 (n_galaxies, n_features) matrix.

    Rows follow ``galaxy_ids``; columns follow the sets in order, their dropped (always
    zero) features left out unless ``drop`` is False. A galaxy without a vector in a set
    has NaN there. On PostgreSQL the vectors arrive by binary COPY, straight into the
    preallocated matrix, so the peak memory stays near the matrix's own size.

    Returns
    -------
    (matrix, feature names)
    """
    galaxy_ids = np.asarray(list(galaxy_ids), dtype=np.int64)
    order = np.argsort(galaxy_ids, kind="stable")
    sorted_ids = galaxy_ids[order]
    blocks, names, offset = {}, [], 0
    for feature_set in feature_sets:
        dropped = set(feature_set.dropped) if drop else set()
        keep = np.array([n not in dropped for n in feature_set.feature_names], bool)
        blocks[feature_set.pk] = (offset, keep if not keep.all() else None, len(feature_set.feature_names))
        names += [n for n, k in zip(feature_set.feature_names, keep, strict=True) if k]
        offset += int(keep.sum())
    matrix = np.full((len(galaxy_ids), offset), np.nan, dtype=np.float32)
    if not len(galaxy_ids) or not blocks:
        return matrix, names
    for galaxy_id, set_id, raw in _feature_rows(list(blocks), sorted_ids):
        at = np.searchsorted(sorted_ids, galaxy_id)
        if at >= len(sorted_ids) or sorted_ids[at] != galaxy_id:
            continue
        start, keep, width = blocks[set_id]
        values = np.frombuffer(raw, dtype="<f4", count=width)
        if keep is not None:
            values = values[keep]
        matrix[order[at], start : start + len(values)] = values
    return matrix, names


#: Galaxies per COPY: libpq buffers a COPY's output as fast as the server sends it, so one
#: COPY of a whole survey could hold a second copy of the matrix in that buffer.
COPY_BATCH_GALAXIES = 2_000


def _feature_rows(set_ids: list[int], galaxy_ids: np.ndarray):
    """(galaxy id, feature set id, float32 bytes) of the sets' vectors for the (sorted) galaxies."""
    from django.db import connection

    from catalogue.models import FeatureVector

    if connection.vendor != "postgresql":
        vectors = FeatureVector.objects.filter(feature_set_id__in=set_ids)
        yield from vectors.values_list("galaxy_id", "feature_set_id", "values").iterator(chunk_size=2000)
        return
    table = FeatureVector._meta.db_table
    ids = ",".join(str(int(s)) for s in set_ids)
    unique = np.unique(galaxy_ids)
    with connection.cursor() as cursor:
        for start in range(0, len(unique), COPY_BATCH_GALAXIES):
            lo, hi = int(unique[start]), int(unique[min(start + COPY_BATCH_GALAXIES, len(unique)) - 1])
            select = (
                f'SELECT galaxy_id, feature_set_id, "values" FROM {table} '
                f"WHERE feature_set_id IN ({ids}) AND galaxy_id BETWEEN {lo} AND {hi}"
            )
            with cursor.cursor.copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "bytea"])
                yield from copy.rows()


def predicted_gz2(galaxy: Galaxy) -> np.ndarray | None:
    """CNN1's predicted unconditional GZ2 probabilities of the galaxy (latest features run), if any."""
    vector = (
        FeatureVector.objects.filter(galaxy=galaxy, feature_set__name="cnn1.gz2")
        .order_by("-feature_set__version")
        .values_list("values", flat=True)
        .first()
    )
    return None if vector is None else np.asarray(vector, dtype=float)
