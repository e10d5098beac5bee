"""Surveys and their galaxies: counts, targets, the learning sample, positions on the sky."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import reduce
from operator import or_

import numpy as np
from django.db import connection
from django.db.models import Count, ExpressionWrapper, F, FloatField, Q, QuerySet

from catalogue.failure_reasons import commonest
from catalogue.models import Galaxy, GalaxyStatus, Image, Prediction, Split, Survey
from pipeline.learning import adapt
from pipeline.sky import chord2 as sky_chord2
from pipeline.sky import cone_index_ranges, unit_vector


def public_surveys() -> QuerySet[Survey]:
    """The surveys of the public catalogue: all but a prediction job's sample, which is its owner's alone.

    Every read a page, the API, the cone search, TAP or an export makes starts here (or from
    :func:`public_galaxies`), so a job's galaxies never reach them.
    """
    return Survey.objects.filter(owner__isnull=True)


def public_galaxies() -> QuerySet[Galaxy]:
    """The galaxies of the public surveys."""
    return Galaxy.objects.filter(survey__in=public_surveys())


def survey_named(name: str) -> Survey | None:
    """The public survey of that name, or None."""
    return public_surveys().filter(name=name).first()


def survey_names() -> list[str]:
    """Every public survey's name, in order."""
    return list(public_surveys().order_by("name").values_list("name", flat=True))


def require_targets(survey: Survey) -> None:
    """Training needs M/L targets in the training split; a survey without them can only be predicted.

    Raises
    ------
    ValueError
        saying how to get predictions for it instead.
    """
    training = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK, split=Split.TRAIN, ml_g__isnull=False)
    if not training.exists():
        with_targets = Galaxy.objects.filter(survey=survey, ml_g__isnull=False).exclude(status=GalaxyStatus.OK)
        excluded = list(with_targets.values_list("status_reason").annotate(n=Count("id")).order_by("-n")[:20])
        if excluded:  # the targets are there, their galaxies are not usable: say why, not that they are missing
            raise ValueError(
                f"survey {survey.name} has M/L targets, but {with_targets.count()} of its galaxies with one are "
                f"out of the learning sample ({commonest(excluded)}), so no galaxy is left to train on"
            )
        raise ValueError(
            f"survey {survey.name} has no M/L targets in a training split (no ml_g column and no gswlc.dat match), "
            f"so it cannot be trained on; apply a trained model set to it instead: "
            f"run_pipeline --survey {survey.name} --models <training survey>"
        )


def adaptation_pool(survey: Survey) -> QuerySet[Galaxy]:
    """The galaxies a set may be adapted on: the learning sample's train and validation splits with
    targets. The test split is never among them: the adapted set's figures are measured there."""
    return Galaxy.objects.filter(
        survey=survey, status=GalaxyStatus.OK, split__in=(Split.TRAIN, Split.VAL), ml_g__isnull=False, ml_g_err__isnull=False
    )


def require_adaptation_targets(survey: Survey, targets: int | None = None) -> int:
    """How many targets adapting a set to ``survey`` will use (``targets``, default all it may).

    Raises
    ------
    ValueError
        when fewer than :data:`pipeline.learning.adapt.MIN_TARGETS` are asked for or available,
        or more are asked for than the survey has, saying how many it has.
    """
    available = adaptation_pool(survey).count()
    least = adapt.MIN_TARGETS
    if targets is not None and targets < least:
        raise ValueError(
            f"adapting needs at least {least} targets (fewer leave the corrections and intervals to noise); asked for {targets}"
        )
    if available < least:
        raise ValueError(
            f"survey {survey.name} has {available} galaxies with M/L targets in its train and validation splits; "
            f"adapting a model set needs at least {least} (fewer leave the corrections and intervals to noise): "
            f"apply the set as it is instead (run_pipeline --survey {survey.name} --models FROM)"
        )
    if targets is not None and targets > available:
        raise ValueError(
            f"survey {survey.name} has {available} galaxies with M/L targets in its train and validation splits; "
            f"asked to adapt with {targets}"
        )
    return targets if targets is not None else available


def learning_sample(survey: Survey) -> list[tuple]:
    """The learning sample's (objid, split, ml_g, ml_g_err, z, mag_g, mag_i), by objid: what training learns from."""
    rows = Galaxy.objects.filter(survey=survey, status=GalaxyStatus.OK, ml_g__isnull=False).exclude(split="")
    return list(rows.order_by("objid").values_list("objid", "split", "ml_g", "ml_g_err", "z", "mag_g", "mag_i"))


def digest(rows: list[tuple]) -> str:
    """A SHA-256 of rows of values: the same rows give the same digest on any database."""
    return hashlib.sha256(json.dumps(rows, default=repr).encode()).hexdigest()


def galaxy_digest(survey: Survey) -> str:
    """What the survey's galaxies are, by value (objids, statuses, splits, targets, photometry), never by row ids."""
    rows = Galaxy.objects.filter(survey=survey).order_by("objid")
    return digest(list(rows.values_list("objid", "status", "split", "ml_g", "ml_g_err", "z", "mag_g", "mag_i")))


def surveys_with_counts() -> QuerySet[Survey]:
    """Every public survey, by name, with its galaxies counted: in all, per status and per split of the learning sample."""
    ok = Q(galaxies__status=GalaxyStatus.OK)
    return (
        public_surveys()
        .annotate(
            n_galaxies=Count("galaxies"),
            n_ok=Count("galaxies", filter=ok),
            n_excluded=Count("galaxies", filter=Q(galaxies__status=GalaxyStatus.EXCLUDED)),
            n_rejected=Count("galaxies", filter=Q(galaxies__status=GalaxyStatus.REJECTED)),
            n_train=Count("galaxies", filter=ok & Q(galaxies__split=Split.TRAIN)),
            n_val=Count("galaxies", filter=ok & Q(galaxies__split=Split.VAL)),
            n_test=Count("galaxies", filter=ok & Q(galaxies__split=Split.TEST)),
        )
        .order_by("name")
    )


def survey_count(survey: Survey) -> int:
    """The survey's galaxies, every status."""
    return Galaxy.objects.filter(survey=survey).count()


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


def positions(survey: Survey) -> np.ndarray:
    """(n, 2) RA and Dec in degrees of the survey's galaxies that were not rejected; NaN where one has none."""
    rows = Galaxy.objects.filter(survey=survey).exclude(status=GalaxyStatus.REJECTED).values_list("ra", "dec")
    return np.array(list(rows), dtype=float).reshape(-1, 2)


def galaxies_in_cone(ra: float, dec: float, radius_deg: float, queryset: QuerySet[Galaxy] | None = None) -> QuerySet[Galaxy]:
    """Galaxies within ``radius_deg`` of (ra, dec), all in degrees, as one SQL query.

    The HEALPix ranges narrow the candidates through the (survey, healpix) index; the
    exact test is a dot product of unit vectors against cos(radius), evaluated by the
    database, so the result is correct across RA = 0/360 and at the poles, and nothing
    goes back to the database as a list of ids.
    """
    queryset = Galaxy.objects.all() if queryset is None else queryset
    ranges, (cx, cy, cz), chord2 = _cone(ra, dec, radius_deg)
    covering = reduce(or_, (Q(healpix__gte=lo, healpix__lt=hi) for lo, hi in ranges))
    dx, dy, dz = F("sky_x") - cx, F("sky_y") - cy, F("sky_z") - cz
    distance2 = ExpressionWrapper(dx * dx + dy * dy + dz * dz, output_field=FloatField())
    return queryset.filter(covering).alias(cone_chord2=distance2).filter(cone_chord2__lte=chord2)


def cone_condition_sql(ra: float, dec: float, radius_deg: float, table: str) -> tuple[str, list[float | int]]:
    """:func:`galaxies_in_cone`'s test as SQL over ``table``'s ``healpix`` and ``sky_x/y/z`` columns,
    with its parameters: for a statement compiled once and asked again with each cone (the cone search)."""
    ranges, centre, chord2 = _cone(ra, dec, radius_deg)
    covering = " OR ".join(f"({table}.healpix >= %s AND {table}.healpix < %s)" for _ in ranges)
    distance2 = " + ".join(f"({table}.sky_{axis} - %s) * ({table}.sky_{axis} - %s)" for axis in "xyz")
    params: list[float | int] = [bound for pair in ranges for bound in pair]
    params += [c for c in centre for _ in range(2)] + [chord2]
    return f"({covering}) AND ({distance2}) <= %s", params


def _cone(ra: float, dec: float, radius_deg: float) -> tuple[list[tuple[int, int]], tuple[float, float, float], float]:
    """A cone's HEALPix index ranges, its centre's unit vector and its squared chord."""
    ranges = cone_index_ranges(float(ra) % 360.0, float(dec), float(radius_deg))
    centre = tuple(float(v) for v in unit_vector(float(ra), float(dec)))
    # cos(r) loses precision near r = 0 (1 - r^2/2); compare the chord length instead:
    # |x - c|^2 = 2 - 2 x.c <= (2 sin(r/2))^2, exact at every radius.
    return ranges, centre, sky_chord2(float(radius_deg))


def surveys_with_galaxy_counts() -> QuerySet[Survey]:
    """Every public survey by name, with its galaxies counted (the API's list)."""
    return public_surveys().annotate(n_galaxies=Count("galaxies")).order_by("name")


def galaxies(survey: Survey | None = None) -> QuerySet[Galaxy]:
    """The catalogue's galaxies (of one survey, or of every public survey)."""
    return public_galaxies() if survey is None else Galaxy.objects.filter(survey=survey)


def searchable_survey_names(surveys: QuerySet[Survey] | None = None) -> tuple[tuple[int, str], ...]:
    """The public surveys of ``surveys`` (every public survey when None) as (id, name), in id order: a search
    names them by id (:func:`galaxies_searchable_in`). With a subquery, PostgreSQL scanned each survey's whole
    (survey) index to intersect it with a cone's HEALPix ranges (12 of a 0.5 deg cone's 145 ms at 700,000
    galaxies); with the ids it walks the (survey, healpix) index."""
    chosen = public_surveys() if surveys is None else surveys.filter(owner__isnull=True)
    return tuple(chosen.order_by("pk").values_list("pk", "name"))


def galaxies_searchable_in(survey_ids: Iterable[int]) -> QuerySet[Galaxy]:
    """The galaxies of the surveys ``survey_ids`` a search may return (all but those rejected at ingest)."""
    return Galaxy.objects.filter(survey_id__in=list(survey_ids)).exclude(status=GalaxyStatus.REJECTED)


def surveys_named(name: str) -> QuerySet[Survey]:
    """The public surveys called ``name`` (none or one)."""
    return public_surveys().filter(name=name)


def survey_ids_in_cone(survey_ids: tuple[int, ...], ra: float, dec: float, radius_deg: float) -> tuple[int, ...]:
    """The surveys of ``survey_ids`` with a searchable galaxy in the cone, in id order: one indexed
    statement, written out (the cone search asks it on every request; the ORM took 3 ms to build it)."""
    if not survey_ids:
        return ()
    condition, params = cone_condition_sql(ra, dec, radius_deg, "g")
    table = Galaxy._meta.db_table
    placeholders = ", ".join(["%s"] * len(survey_ids))
    sql = f"SELECT DISTINCT g.survey_id FROM {table} g WHERE g.survey_id IN ({placeholders}) AND g.status <> %s AND {condition}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*survey_ids, GalaxyStatus.REJECTED.value, *params])
        return tuple(sorted(row[0] for row in cursor.fetchall()))


def galaxies_with_objid(objid: int, survey_name: str = "") -> list[Galaxy]:
    """At most two galaxies with that objid (of that survey, if named), with survey and preprocessing joined."""
    matches = public_galaxies().select_related("survey", "preprocessed").filter(objid=objid)
    if survey_name:
        matches = matches.filter(survey__name=survey_name)
    return list(matches[:2])


def cutout(galaxy: Galaxy, band: str) -> Image | None:
    """The galaxy's usable FITS cutout in ``band``, or None."""
    return galaxy.images.filter(band=band, status=Image.Status.OK).exclude(file="").first()


def public_galaxies_with_links(ids: Iterable[int]) -> dict[int, Galaxy]:
    """The public galaxies of ``ids`` by id, with what their DataLink links need (survey, preprocessing, images)."""
    found = public_galaxies().filter(pk__in=set(ids)).select_related("survey", "preprocessed").prefetch_related("images")
    return {galaxy.pk: galaxy for galaxy in found}


def model_sets_that_predicted(galaxy_ids: Iterable[int]) -> dict[int, set[str]]:
    """Galaxy id -> the names of the model sets with a prediction of it."""
    found: dict[int, set[str]] = {}
    predicted = Prediction.objects.filter(galaxy_id__in=list(galaxy_ids), model__model_set__isnull=False)
    for galaxy_id, name in predicted.values_list("galaxy_id", "model__model_set__name").distinct():
        found.setdefault(galaxy_id, set()).add(name)
    return found


def a_predicted_position() -> tuple[float, float] | None:
    """(ra, dec) of a predicted public galaxy (of any public galaxy when none is predicted), or None."""
    predicted = Prediction.objects.filter(galaxy__survey__owner__isnull=True, galaxy__ra__isnull=False)
    found = predicted.order_by("galaxy_id").values_list("galaxy__ra", "galaxy__dec").first()
    return found or public_galaxies().filter(ra__isnull=False).values_list("ra", "dec").first()


def galaxy_by_id(pk: int) -> Galaxy | None:
    """A galaxy of the public catalogue with its survey, or None."""
    return public_galaxies().select_related("survey").filter(pk=pk).first()


def survey_name(survey_id: int) -> str:
    """A survey's name from its id."""
    return Survey.objects.values_list("name", flat=True).get(pk=survey_id)


def usable_images(galaxy: Galaxy) -> list:
    """The galaxy's images that passed the ingest checks and have a file."""
    return [image for image in galaxy.images.filter(status="ok") if image.file]


def every_survey() -> QuerySet[Survey]:
    """Every public survey, by name."""
    return public_surveys().order_by("name")


def galaxies_with_survey() -> QuerySet[Galaxy]:
    """Every public galaxy with its survey joined (pages that show each row's survey)."""
    return public_galaxies().select_related("survey")


def has_usable_image(galaxy: Galaxy, band: str = "g") -> bool:
    """Whether the galaxy has a cutout in ``band`` that passed the ingest checks."""
    return galaxy.images.filter(band=band, status="ok").exists()
