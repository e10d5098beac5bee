"""Selectors: read-only queries shared by the stages, pages, the API and commands.

Every "the latest ..." of the service is answered here, from runs that succeeded, in one
order (newest finished first): a failed or cancelled run's results are never picked.
"""

from __future__ import annotations

from functools import reduce
from operator import or_

import numpy as np
from django.db.models import Count, Exists, ExpressionWrapper, F, FloatField, OuterRef, Q, QuerySet

from catalogue.models import (
    FeatureSet,
    FeatureVector,
    Galaxy,
    GalaxyStatus,
    Prediction,
    Run,
    RunStage,
    Split,
    Survey,
    TrainedModel,
)
from pipeline import gz2
from pipeline.presets import CNN_GROUP_SETS, CNN_ROLES, COLOUR_ROLE, OPTIONAL_GROUPS
from pipeline.regression import NAMED_MODEL_NAMES, REQUIRED_MODEL_NAMES
from pipeline.sky import cone_index_ranges, unit_vector


def succeeded_runs(survey: Survey, stage: str) -> QuerySet[Run]:
    """The survey's succeeded runs of ``stage``, newest finished first."""
    return Run.objects.filter(survey=survey, stage=stage, status=Run.Status.SUCCEEDED).order_by("-finished", "-pk")


def latest_succeeded_run(survey: Survey, stage: str) -> Run | None:
    """The survey's newest succeeded run of ``stage``, if any."""
    return succeeded_runs(survey, stage).first()


def require_targets(survey: Survey) -> None:
    """Training needs M/L targets in the training split; a survey without them can only be predicted.

    Raises
    ------
    ValueError
        saying how to get predictions for it instead.
    """
    training = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK, split=Split.TRAIN, ml_g__isnull=False)
    if not training.exists():
        raise ValueError(
            f"survey {survey.name} has no M/L targets in a training split (no ml_g column and no gswlc.dat match), "
            f"so it cannot be trained on; apply a trained model set to it instead: "
            f"run_pipeline --survey {survey.name} --models <training survey>"
        )


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
    run = latest_succeeded_run(survey, RunStage.FEATURES)
    sets = {fs.name: fs for fs in FeatureSet.objects.filter(run=run)} if run else {}
    required = [names for group, names in CNN_GROUP_SETS.items() if group not in OPTIONAL_GROUPS]
    missing = [name for names in required for name in names if name not in sets]
    if missing:
        raise ValueError(
            f"survey {survey.name} has no complete CNN features (missing {', '.join(missing)}); run the features stage first"
        )
    return sets


def latest_named_models(survey: Survey) -> dict[str, TrainedModel]:
    """The named M/L models of the survey's latest successful gbm run.

    Raises
    ------
    ValueError
        when no gbm run with every named model has finished on the survey.
    """
    run = latest_succeeded_run(survey, RunStage.GBM)
    found = {m.name: m for m in TrainedModel.objects.filter(run=run, name__in=NAMED_MODEL_NAMES)} if run else {}
    if not set(REQUIRED_MODEL_NAMES) <= set(found):
        raise ValueError(f"survey {survey.name} has no trained M/L models yet; run the gbm stage first")
    return found


def prediction_model(survey: Survey | None, name: str, model_set=None) -> TrainedModel:
    """The model called ``name`` whose predictions of the survey's galaxies to show (or the model with that id).

    By name, the model belongs to ``model_set`` when given, else to the set applied to the
    survey last (its newest successful predict run's); a survey predicted before sets
    existed falls back to its own newest model of that name.

    Raises
    ------
    ValueError
        without a survey (for a name), without such a model, or when it has no predictions
        of the survey yet (the message says how to make them).
    """
    from catalogue.services.model_sets import applications, applied_model_set

    name = str(name)
    with_predictions = TrainedModel.objects.annotate(predicted=Exists(Prediction.objects.filter(model=OuterRef("pk"))))
    if name.isdigit():
        model = with_predictions.filter(pk=int(name)).first()
        if model is None:
            raise ValueError(f"no model with id {name}")
    elif survey is None:
        raise ValueError("predictions belong to one survey's model: give the survey as well as the model name")
    else:
        if model_set is not None:
            application = applications(survey, model_set).first()
            if application is None:
                raise ValueError(
                    f"model set {model_set.name} has not been applied to survey {survey.name}; apply it: "
                    f"run_pipeline --survey {survey.name} --models {model_set.name}"
                )
        else:
            applied = applied_model_set(survey)
            model_set, application = applied if applied else (None, None)
        if model_set is not None:
            skipped = application.result.get("skipped", {})
            if name in skipped:
                raise ValueError(f"model set {model_set.name} did not predict {name} for survey {survey.name}: {skipped[name]}")
            model = with_predictions.filter(model_set=model_set, name=name).first()
            if model is None:
                names = sorted(model_set.named_models.values_list("name", flat=True))
                raise ValueError(f"model set {model_set.name} has no model named {name!r}; it has: {', '.join(names)}")
        else:
            model = with_predictions.filter(survey=survey, name=name).order_by("-created", "-pk").first()
        if model is None:
            names = sorted(set(TrainedModel.objects.filter(survey=survey).values_list("name", flat=True)))
            raise ValueError(f"survey {survey.name} has no model named {name!r}; it has: {', '.join(names) or 'none'}")
    if not model.predicted:
        raise ValueError(f"model {model.name} #{model.pk} has no predictions yet; run the predict stage")
    return model


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


def surveys_with_counts() -> QuerySet[Survey]:
    """Every survey, by name, with its galaxies counted: in all, per status and per split of the learning sample."""
    ok = Q(galaxies__status=GalaxyStatus.OK)
    return Survey.objects.annotate(
        n_galaxies=Count("galaxies"),
        n_ok=Count("galaxies", filter=ok),
        n_excluded=Count("galaxies", filter=Q(galaxies__status=GalaxyStatus.EXCLUDED)),
        n_rejected=Count("galaxies", filter=Q(galaxies__status=GalaxyStatus.REJECTED)),
        n_train=Count("galaxies", filter=ok & Q(galaxies__split=Split.TRAIN)),
        n_val=Count("galaxies", filter=ok & Q(galaxies__split=Split.VAL)),
        n_test=Count("galaxies", filter=ok & Q(galaxies__split=Split.TEST)),
    ).order_by("name")


def split_counts(survey: Survey) -> dict[str, int]:
    """Galaxies of the learning sample per split ("none" for those without one)."""
    rows = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK).values_list("split").annotate(n=Count("id"))
    return {split or "none": n for split, n in rows}


def targets_by_split(survey: Survey) -> dict[str, np.ndarray]:
    """The target M/L (Msun/Lsun_g) of the learning sample per split, for the Fig. 2 histograms."""
    rows = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK, ml_g__isnull=False).values_list("split", "ml_g")
    by_split: dict[str, list[float]] = {Split.TRAIN: [], Split.VAL: [], Split.TEST: []}
    for split, ml in rows:
        by_split.setdefault(split, []).append(ml)
    return {str(k): np.asarray(v) for k, v in by_split.items() if v}


def galaxy_predictions(galaxy: Galaxy) -> QuerySet[Prediction]:
    """Every prediction of a galaxy, newest model first."""
    return Prediction.objects.filter(galaxy=galaxy).select_related("model", "galaxy").order_by("-model__created", "-pk")


def latest_prediction_per_model(galaxy: Galaxy) -> dict[str, Prediction]:
    """A galaxy's prediction by its newest model of each name, by model name."""
    latest: dict[str, Prediction] = {}
    for prediction in galaxy_predictions(galaxy).order_by("model__name", "-model__created", "-pk"):
        latest.setdefault(prediction.model.name, prediction)
    return latest


def test_split_predictions(model: TrainedModel) -> dict[str, np.ndarray]:
    """The model's predictions of its training survey's test split with each galaxy's target, error
    (Msun/Lsun_g), g luminosity (Lsun_g), redshift, morphology class and CNN1's P(features):
    Figs. 4-7. Surveys the model was applied to are not its test split, even with targets."""
    rows = list(
        Prediction.objects.filter(
            model=model,
            galaxy__survey_id=model.survey_id,
            galaxy__split=Split.TEST,
            galaxy__status=GalaxyStatus.OK,
            galaxy__ml_g__isnull=False,
        ).values_list(
            "galaxy_id", "ml_pred", "galaxy__ml_g", "galaxy__ml_g_err", "galaxy__lum_g", "galaxy__z", "galaxy__morphology"
        )
    )
    ids = [r[0] for r in rows]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
    names = ["id", "predicted", "target", "error", "lum_g", "z"]
    out = {name: np.asarray(columns[i], dtype=float) for i, name in enumerate(names)}
    out["morphology"] = np.asarray(columns[6], dtype=object)
    out["p_features"] = np.full(len(ids), np.nan)
    set_id = (model.hyperparameters or {}).get("feature_sets", {}).get("cnn1.gz2")
    feature_set = FeatureSet.objects.filter(pk=set_id).first() if set_id else None
    if feature_set is not None and ids:
        probabilities, _ = feature_matrix([feature_set], ids, drop=False)
        out["p_features"] = probabilities[:, gz2.ANSWER_INDEX["a02"]]
    return out
