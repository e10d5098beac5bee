"""Features and networks: the latest trained networks, the latest feature sets, feature matrices."""

from __future__ import annotations

import numpy as np
from django.db import connection

from catalogue.models import FeatureSet, FeatureVector, Galaxy, Run, Survey, TrainedModel
from catalogue.selectors.runs import latest_product_run
from pipeline.presets import CNN_GROUP_SETS, CNN_ROLES, COLOUR_ROLE, OPTIONAL_GROUPS


def latest_cnn_models(survey: Survey, preset_name: str) -> dict[str, TrainedModel]:
    """The newest trained network of each CNN role for a survey and preset, from cnn runs that
    succeeded: a cancelled or failed run's first networks are not mixed with another's."""
    finished = TrainedModel.objects.filter(
        survey=survey, kind=TrainedModel.Kind.CNN, preset=preset_name, run__status=Run.Status.SUCCEEDED
    ).order_by("-run__finished", "-pk")
    found = {role: finished.filter(name=role).first() for role in CNN_ROLES}
    colour, cnn4 = finished.filter(name=COLOUR_ROLE).first(), found["cnn4"]
    if colour is not None and cnn4 is not None and colour.run_id == cnn4.run_id:  # not an older run's beside newer CNN1-4
        found[COLOUR_ROLE] = colour
    return {role: model for role, model in found.items() if model is not None}


def latest_feature_sets(survey: Survey) -> dict[str, FeatureSet]:
    """The feature sets of the survey's latest successful features run, by name.

    Raises
    ------
    ValueError
        when the survey has no complete CNN features yet.
    """
    run = latest_product_run(survey, "feature_sets")
    sets = {fs.name: fs for fs in FeatureSet.objects.filter(run=run)} if run else {}
    required = [names for group, names in CNN_GROUP_SETS.items() if group not in OPTIONAL_GROUPS]
    missing = [name for names in required for name in names if name not in sets]
    if missing:
        raise ValueError(
            f"survey {survey.name} has no complete CNN features (missing {', '.join(missing)}); run the features stage first"
        )
    return sets


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
    """CNN1's predicted unconditional GZ2 probabilities of the galaxy, from the newest features run
    that succeeded (a failed or cancelled run's vectors are never shown), if any."""
    vector = (
        FeatureVector.objects.filter(galaxy=galaxy, feature_set__name="cnn1.gz2", feature_set__run__status=Run.Status.SUCCEEDED)
        .order_by("-feature_set__run__finished", "-feature_set__version")
        .values_list("values", flat=True)
        .first()
    )
    return None if vector is None else np.asarray(vector, dtype=float)
