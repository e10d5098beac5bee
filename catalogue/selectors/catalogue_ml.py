"""The catalogue's M/L of each galaxy, and the SQL that joins prediction columns to galaxy rows.

The service's product is a predicted M/L for galaxies that have none. Of the named models of the
set applied to a galaxy's survey, the catalogue shows the one with the lowest *validation* L1 among
those whose inputs the galaxy has (``pipeline.learning.named_models.required_inputs``): gi_images
where it has both images and an i flux, gi_morph with an i flux, g_morph with a g image only, lgz
without an image. Every reader (pages, API, downloads, the survey's figures) asks this module, so
the choice is made in one place.

The choice is made by the database in the statement that selects the galaxies: one LEFT JOIN
per candidate model on the (galaxy, model) index, and a CASE that takes the first usable one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce
from math import inf
from operator import or_

import numpy as np
from django.db.models import (
    Case,
    CharField,
    F,
    FilteredRelation,
    FloatField,
    IntegerField,
    JSONField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast

from catalogue.columns import CATALOGUE_ML_COLUMNS, PREDICTION_COLUMNS, Column
from catalogue.models import Galaxy, ModelSet, Prediction, Survey, TrainedModel
from catalogue.selectors.model_sets import applications_of
from pipeline.learning.named_models import NAMED, NAMED_MODEL_NAMES, required_inputs

#: A galaxy has an input when this holds (see ``required_inputs``).
INPUT_PRESENT = {
    "mag_i": Q(mag_i__isnull=False),
    "g_image": Q(preprocessed__status="ok"),
    "i_image": Q(preprocessed__i_band="ok"),
}
#: The same tests as SQL over ``g`` (a galaxy row with mag_i) and ``pre`` (its preprocessing row), for views.
INPUT_PRESENT_SQL = {"mag_i": "g.mag_i IS NOT NULL", "g_image": "pre.status = 'ok'", "i_image": "pre.i_band = 'ok'"}
#: Before the catalogue's columns as galaxy attributes (``cat_ml``, ``cat_ml_model``, ...).
CATALOGUE_PREFIX = "cat_"
#: The catalogue column -> the Prediction field it is read from.
_SOURCE = {"ml": "ml_pred", "mstar": "mstar_pred"}


@dataclass(frozen=True)
class Candidate:
    """A named model a survey's catalogue may show, with what it needs of a galaxy."""

    model_id: int
    name: str
    model_set: str
    val_l1: float
    needs: frozenset[str]


def catalogue_candidates(survey: Survey) -> list[Candidate]:
    """The named models of the set applied to the survey last that predicted it, best-validated first.

    Empty before any set was applied: the survey has no catalogue M/L yet.
    """
    return list(dict(survey_candidates_by_id([survey.pk])).get(survey.pk, ()))


def choose_model(candidates: list[Candidate], has: set[str], predicted: set[str]) -> Candidate | None:
    """The catalogue's model for a galaxy that has the inputs ``has`` and predictions by the models
    ``predicted``: the first candidate it has the inputs of and a prediction by (the rule the SQL
    of :func:`catalogue_ml_columns` applies, written out for one galaxy)."""
    return next((c for c in candidates if c.needs <= has and c.name in predicted), None)


@dataclass
class PredictionColumns:
    """Prediction columns for galaxy rows: the joins to add, then each column's SQL expression.

    ``label`` says whose predictions they are (a table's metadata); ``columns`` are described in
    :mod:`catalogue.columns`. With no columns, the rows carry none.
    """

    columns: tuple[Column, ...] = ()
    relations: dict = field(default_factory=dict)
    cells: dict = field(default_factory=dict)
    label: str = ""
    #: Before each column's name as a galaxy's attribute: the catalogue's columns share names
    #: (``ml_lo68``, ``out_of_support``) with a named model's, and a row may carry both.
    prefix: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def attribute(self, name: str) -> str:
        """The galaxy attribute that holds column ``name`` after :meth:`annotate`."""
        return f"{self.prefix}{name}"

    def annotate(self, queryset: QuerySet[Galaxy]) -> QuerySet[Galaxy]:
        """The galaxies with every column as an attribute (None where a galaxy has no prediction)."""
        if not self.columns:
            return queryset
        cells = {self.attribute(name): expression for name, expression in self.cells.items()}
        return queryset.annotate(**self.relations).annotate(**cells)

    def values(self, galaxy: Galaxy) -> dict:
        """The columns of an annotated galaxy, by column name."""
        return {name: getattr(galaxy, self.attribute(name)) for name in self.names}


def one_model_columns(model: TrainedModel) -> PredictionColumns:
    """One named model's prediction columns (``ml_pred``, ...), as ``?model=`` and ``--model`` ask."""
    condition = Q(predictions__model=model)
    cells = {c.name: F(f"prediction__{c.name}") for c in PREDICTION_COLUMNS}
    label = f"{model.name} #{model.pk}, run #{model.run_id}"
    relations = {"prediction": FilteredRelation("predictions", condition=condition)}
    return PredictionColumns(PREDICTION_COLUMNS, relations, cells, label)


#: Each survey's catalogue candidates, by survey id: what :func:`catalogue_ml_columns_of` builds the columns from.
SurveyCandidates = tuple[tuple[int, tuple[Candidate, ...]], ...]


def survey_candidates(surveys: Iterable[Survey]) -> SurveyCandidates:
    """The catalogue candidates of each of ``surveys`` that has any, in survey order: hashable, so
    that a statement built from them can be kept and used again while they stay the same."""
    return survey_candidates_by_id(survey.pk for survey in surveys)


def survey_candidates_by_id(survey_ids: Iterable[int]) -> SurveyCandidates:
    """:func:`survey_candidates` of the surveys ``survey_ids``, in three statements however many there are (the
    cone search asks on every request; three statements a survey took 6 of a 0.5 deg cone's 60 ms).

    A survey's set is the one its newest successful prediction run recorded (of its five newest, the
    first whose set still exists: :func:`~catalogue.selectors.model_sets.applied_model_set`); its
    candidates are that set's named models the run did not skip, by validation L1, then by name order.
    """
    ids = sorted(set(survey_ids))
    if not ids:
        return ()
    runs = applications_of(ids).values_list("survey_id", "config__model_set", "result__skipped")
    newest: dict[int, list[tuple[int, dict]]] = {}
    for survey_id, model_set_id, skipped in runs:
        found = newest.setdefault(survey_id, [])
        if len(found) < 5:
            found.append((model_set_id, skipped or {}))
    tried = {model_set_id for found in newest.values() for model_set_id, _ in found}
    names = dict(ModelSet.objects.filter(pk__in=tried).values_list("pk", "name"))
    models: dict[int, list[tuple[int, str, float]]] = {}
    named = TrainedModel.objects.filter(model_set_id__in=names, name__in=list(NAMED))
    for pk, name, model_set_id, l1 in named.values_list("pk", "name", "model_set_id", "metrics__val__l1"):
        models.setdefault(model_set_id, []).append((pk, name, float(l1) if l1 is not None else inf))
    by_survey = []
    for survey_id in ids:
        applied = next(((pk, skipped) for pk, skipped in newest.get(survey_id, []) if pk in names), None)
        if applied is None:
            continue
        model_set_id, skipped = applied
        ranked = sorted(
            (m for m in models.get(model_set_id, []) if m[1] not in skipped),
            key=lambda m: (m[2], NAMED_MODEL_NAMES.index(m[1])),
        )
        found = tuple(Candidate(pk, name, names[model_set_id], l1, required_inputs(NAMED[name])) for pk, name, l1 in ranked)
        if found:
            by_survey.append((survey_id, found))
    return tuple(by_survey)


def catalogue_ml_columns(surveys: Iterable[Survey]) -> PredictionColumns:
    """The catalogue's M/L columns (:data:`~catalogue.columns.CATALOGUE_ML_COLUMNS`) for galaxies of ``surveys``."""
    return catalogue_ml_columns_of(survey_candidates(surveys))


def catalogue_ml_columns_of(candidates: SurveyCandidates) -> PredictionColumns:
    """The catalogue's M/L columns for galaxies of the surveys of ``candidates`` (:func:`survey_candidates`).

    Rank r joins each survey's r-th best-validated candidate's prediction; a galaxy's row takes
    the first rank whose model predicted it and whose inputs it has. Galaxies of a survey no set
    was applied to get empty columns.
    """
    by_survey = dict(candidates)
    depth = max((len(found) for found in by_survey.values()), default=0)
    relations: dict = {}
    choices: list[tuple[int, Q, dict[int, Candidate]]] = []
    for rank in range(depth):
        at_rank = {pk: found[rank] for pk, found in by_survey.items() if len(found) > rank}
        joined = reduce(or_, (Q(survey_id=pk) & Q(predictions__model_id=c.model_id) for pk, c in at_rank.items()))
        relations[f"catalogue_{rank}"] = FilteredRelation("predictions", condition=joined)
        usable = reduce(or_, (Q(survey_id=pk) & _has(c.needs) for pk, c in at_rank.items()))
        choices.append((rank, Q(**{f"catalogue_{rank}__id__isnull": False}) & usable, at_rank))

    def pick(source: str, output) -> Case:
        return Case(*(When(usable, then=F(f"catalogue_{rank}__{source}")) for rank, usable, _ in choices), output_field=output)

    def name(of) -> Case:
        whens = [When(usable & Q(survey_id=pk), then=Value(of(c))) for _, usable, at_rank in choices for pk, c in at_rank.items()]
        return Case(*whens, output_field=CharField())

    cells: dict = {}
    for column in CATALOGUE_ML_COLUMNS:
        if column.name == "ml_model":
            cells[column.name] = name(lambda c: c.name)
        elif column.name == "ml_model_set":
            cells[column.name] = name(lambda c: c.model_set)
        elif column.name == "out_of_support":
            flags = [when for rank, usable, _ in choices for when in _flag(rank, usable)]
            cells[column.name] = Case(*flags, output_field=IntegerField())
        elif column.name == "support_reasons":
            cells[column.name] = pick("support_reasons", JSONField())
        elif column.name == "scaling_fallback":  # the galaxy's own, whichever model its M/L comes from
            cells[column.name] = Case(
                When(preprocessed__scaling_fallback=True, then=Value(1)),
                When(preprocessed__status="ok", then=Value(0)),
                output_field=IntegerField(),
            )
        else:
            cells[column.name] = pick(_SOURCE.get(column.name, column.name), FloatField())
    if not choices:
        cells = {column.name: Cast(Value(None), _empty(column)) for column in CATALOGUE_ML_COLUMNS}  # typed NULLs
    label = "the catalogue's M/L: per galaxy, the best-validated model it has the inputs of"
    return PredictionColumns(CATALOGUE_ML_COLUMNS, relations, cells, label, prefix=CATALOGUE_PREFIX)


def catalogue_choice_sql(galaxy: str = "g", preprocessed: str = "pre", model_set_id: str = "a.model_set_id") -> str:
    """SQL of a LATERAL subquery giving a galaxy row its catalogue prediction (the rule of
    :func:`choose_model`): of the named models of the set ``model_set_id`` that predicted it and whose
    inputs it has, the best-validated one; with the prediction's columns and ``ml_model``.

    For views (TAP's catalogue table), where the galaxy is ``galaxy`` (with ``galaxy_id`` and
    ``mag_i``) and its preprocessing row ``preprocessed`` (LEFT JOINed by the caller).
    """
    needs = []
    for name in NAMED_MODEL_NAMES:
        tests = [INPUT_PRESENT_SQL[need] for need in sorted(required_inputs(NAMED[name]))]
        condition = " AND ".join(tests).replace("g.", f"{galaxy}.").replace("pre.", f"{preprocessed}.") or "true"
        needs.append(f"WHEN '{name}' THEN ({condition})")
    order = ", ".join(f"'{name}'" for name in NAMED_MODEL_NAMES)
    return (
        "SELECT p.*, m.name AS ml_model FROM catalogue_trainedmodel m"
        f" JOIN catalogue_prediction p ON p.model_id = m.id AND p.galaxy_id = {galaxy}.galaxy_id"
        f" WHERE m.model_set_id = {model_set_id} AND m.name IN ({order})"
        f" AND COALESCE(CASE m.name {' '.join(needs)} END, false)"
        " ORDER BY COALESCE((m.metrics -> 'val' ->> 'l1')::float8, 'Infinity'::float8),"
        f" array_position(ARRAY[{order}]::text[], m.name::text) LIMIT 1"
    )


def _flag(rank: int, usable: Q) -> tuple[When, When]:
    """1 or 0 as the galaxy's prediction by its rank-``rank`` model is flagged, where that model is its choice."""
    flagged = Q(**{f"catalogue_{rank}__out_of_support": True})
    return When(usable & flagged, then=Value(1)), When(usable, then=Value(0))


def _has(needs: frozenset[str]) -> Q:
    return reduce(lambda q, need: q & INPUT_PRESENT[need], sorted(needs), Q())


def _empty(column: Column):
    if column.name == "support_reasons":
        return JSONField()
    return {"float": FloatField(), "int": IntegerField()}.get(column.kind, CharField())


def galaxy_with_catalogue_ml(galaxy: Galaxy) -> Galaxy:
    """The galaxy read again with its catalogue M/L columns as attributes (a galaxy's page and API detail)."""
    columns = catalogue_ml_columns([galaxy.survey])
    return columns.annotate(Galaxy.objects.select_related("survey", "preprocessed").filter(pk=galaxy.pk)).get()


def predicted_count(survey: Survey) -> int:
    """How many of the survey's galaxies have a catalogue M/L (a prediction by a model of its applied set)."""
    candidates = [c.model_id for c in catalogue_candidates(survey)]
    if not candidates:
        return 0
    predicted = Prediction.objects.filter(model_id__in=candidates, galaxy__survey=survey)
    return predicted.values("galaxy_id").distinct().count()


@dataclass
class CatalogueSample:
    """The catalogue's M/L of (a sample of) a survey's galaxies, as arrays for its figures."""

    ml: np.ndarray  # solMass/solLum
    mstar: np.ndarray  # solMass
    lum_g: np.ndarray  # solLum (g band)
    g_minus_i: np.ndarray  # mag, NaN without mag_i
    flagged: np.ndarray  # bool
    ml_model: np.ndarray  # str
    morphology: np.ndarray  # str
    n_survey: int  # the survey's galaxies with a catalogue M/L, sampled or not


def catalogue_sample(survey: Survey, limit: int = 20_000) -> CatalogueSample | None:
    """The catalogue's M/L of the survey's predicted galaxies, every ``k``-th by id where there are more than
    ``limit``, so a 700,000-galaxy survey's figures read 20,000 rows; None before any set was applied."""
    columns = catalogue_ml_columns([survey])
    if not columns.relations:
        return None
    rows = columns.annotate(Galaxy.objects.filter(survey=survey))
    rows = rows.filter(**{f"{columns.attribute('ml')}__isnull": False})
    n = predicted_count(survey)
    if n > limit:
        rows = rows.alias(stride=F("id") % (n // limit + 1)).filter(stride=0)
    names = ["ml", "mstar", "out_of_support", "ml_model"]
    values = list(rows.values_list(*(columns.attribute(name) for name in names), "lum_g", "mag_g", "mag_i", "morphology"))
    ml, mstar, flagged, model, lum, mag_g, mag_i, morphology = zip(*values, strict=True) if values else [()] * 8
    return CatalogueSample(
        ml=_floats(ml),
        mstar=_floats(mstar),
        lum_g=_floats(lum),
        g_minus_i=_floats(mag_g) - _floats(mag_i),
        flagged=np.array([bool(f) for f in flagged], dtype=bool),
        ml_model=np.array(model, dtype=object),
        morphology=np.array(morphology, dtype=object),
        n_survey=n,
    )


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)
