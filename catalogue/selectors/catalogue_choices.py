"""The catalogue's choice of model per galaxy as stored, and whether it may be read.

Choosing per request (:func:`catalogue.selectors.catalogue_ml.catalogue_ml_columns_of`) joins every
candidate model's prediction and the galaxy's preprocessing row to each galaxy: four index lookups a
row, most of a 0.5 degree cone search's time at 700,000 galaxies. The refresh
(:mod:`catalogue.services.catalogue_choices`) stores each galaxy's choice once; a reader joins that one
row instead, but only while it is current for every survey it reads: stored from the same candidates
(the applied set's models, best-validated first) and with no :class:`~catalogue.models.CatalogueChange`
noted since, which PostgreSQL's triggers write whenever predictions or a galaxy's inputs change.
Otherwise the reader chooses per request, as before: an answer is never older than the data.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Case, CharField, F, IntegerField, Value, When
from django.db.models.functions import Cast

from catalogue.models import CatalogueChange, CatalogueChoiceSet
from catalogue.selectors.catalogue_ml import Candidate, SurveyCandidates


def candidates_key(candidates: Iterable[Candidate]) -> str:
    """The candidates a survey's choices are made from, as stored with them: model id and name, best first."""
    return " ".join(f"{c.model_id}:{c.name}" for c in candidates)


def stored_choices_current(survey_ids: Iterable[int], candidates: SurveyCandidates) -> bool:
    """Whether the stored choices of the surveys ``survey_ids`` are theirs now: those with ``candidates``
    stored from these candidates, the others (no set applied) with none stored, and nothing changed since.
    One statement. Only PostgreSQL's triggers note changes: on another database, never."""
    if connection.vendor != "postgresql":
        return False
    wanted = {pk: "" for pk in survey_ids} | {pk: candidates_key(found) for pk, found in candidates}
    sets, changes = CatalogueChoiceSet._meta.db_table, CatalogueChange._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT survey_id, candidates FROM {sets} WHERE survey_id = ANY(%s)"
            f" UNION ALL (SELECT survey_id, NULL FROM {changes} WHERE survey_id = ANY(%s) LIMIT 1)",
            [list(wanted), list(wanted)],
        )
        stored = cursor.fetchall()
    if any(key is None for _, key in stored):  # a change since
        return False
    return dict(stored) == {pk: key for pk, key in wanted.items() if key}


def stored_choice_cells(candidates: SurveyCandidates) -> dict:
    """The cone search's catalogue columns (``ml``, ``ml_lo68``, ``ml_hi68``, ``mstar``, ``ml_model``,
    ``ml_model_set``, ``out_of_support``) read from the stored choice: one LEFT JOIN on the galaxy's id.
    The model's and its set's names come from ``candidates``, so a renamed set is named as it is now."""
    models = {c.model_id: c for _, found in candidates for c in found}

    def name(of) -> Case:
        whens = [When(catalogue_choice__model_id=pk, then=Value(of(c))) for pk, c in models.items()]
        return Case(*whens, output_field=CharField())

    return {
        "ml": F("catalogue_choice__ml"),
        "ml_lo68": F("catalogue_choice__ml_lo68"),
        "ml_hi68": F("catalogue_choice__ml_hi68"),
        "mstar": F("catalogue_choice__mstar"),
        "ml_model": name(lambda c: c.name),
        "ml_model_set": name(lambda c: c.model_set),
        "out_of_support": Cast("catalogue_choice__out_of_support", IntegerField()),
    }
