"""Store each galaxy's catalogue choice of model, so that a cone search reads one row instead of choosing.

:func:`refresh` writes a survey's :class:`~catalogue.models.CatalogueChoice` rows with the rule every
reader applies (:func:`catalogue.selectors.catalogue_ml.catalogue_ml_columns_of`, in one statement
that writes only the rows that differ), records the candidates it chose from, and deletes the changes
the database's triggers had noted for the survey before it started (a change committed while it runs
stays, and makes the survey stale again). Celery beat calls :func:`refresh_stale` every minute: a
public survey whose choices are stale is refreshed once its changes have settled, so a prediction run
that writes for an hour is refreshed after it, not every minute of it. Until then readers choose per
request (:mod:`catalogue.selectors.catalogue_choices`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Case, F, IntegerField, Max, Value, When

from catalogue.models import CatalogueChange, CatalogueChoice, CatalogueChoiceSet, Galaxy, Survey
from catalogue.selectors.catalogue_choices import candidates_key
from catalogue.selectors.catalogue_ml import catalogue_candidates, catalogue_ml_columns_of
from catalogue.selectors.clock import database_now
from catalogue.selectors.surveys import public_surveys

log = logging.getLogger(__name__)

#: Seconds a survey's last noted change must be old before :func:`refresh_stale` refreshes it.
SETTLE_S = 60.0
#: Choices stored at once past which the refresh has PostgreSQL read the table's statistics again.
ANALYZE_AFTER = 10_000
#: The first key of the advisory lock that keeps two refreshes of one survey apart.
_LOCK = 0x4D4D43  # "MMC"


def refresh(survey: Survey) -> int:
    """Store the catalogue's choice for each galaxy of ``survey`` that has one; how many it holds.

    Only the rows that differ are written: rewriting a survey whole left autovacuum 700,000 dead
    rows to reclaim on the cores the cone searches use. A survey no set was applied to keeps none
    (and no record of candidates).
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK, survey.pk])
        seen = list(CatalogueChange.objects.filter(survey_id=survey.pk).values_list("pk", flat=True))
        candidates = tuple(catalogue_candidates(survey))
        if candidates:
            held, written = _write_choices(survey, candidates)
            CatalogueChoiceSet.objects.update_or_create(
                survey=survey, defaults={"candidates": candidates_key(candidates), "refreshed": database_now()}
            )
        else:
            held, written = 0, CatalogueChoice.objects.filter(galaxy__survey=survey)._raw_delete(CatalogueChoice.objects.db)
            CatalogueChoiceSet.objects.filter(survey=survey).delete()
        CatalogueChange.objects.filter(pk__in=seen)._raw_delete(CatalogueChange.objects.db)
        if written >= ANALYZE_AFTER:  # the planner's statistics of a table much changed, before autovacuum's
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {CatalogueChoice._meta.db_table}")
    return held


def _write_choices(survey: Survey, candidates: tuple) -> tuple[int, int]:
    """The choices the per-request rule makes for the survey's galaxies, written where they differ from
    those stored, and the rows of galaxies that have none now deleted, in one statement; how many
    choices the survey holds and how many rows were written or deleted."""
    columns = catalogue_ml_columns_of(((survey.pk, candidates),))
    model_id = Case(
        *(When(**{columns.attribute("ml_model"): c.name}, then=Value(c.model_id)) for c in candidates),
        output_field=IntegerField(),
    )
    chosen = (
        columns.annotate(Galaxy.objects.filter(survey=survey))
        .annotate(chosen_model=model_id)
        .filter(chosen_model__isnull=False)
        .values(
            choice_galaxy=F("pk"),
            choice_model=F("chosen_model"),
            **{f"choice_{name}": F(columns.attribute(name)) for name in ("ml", "ml_lo68", "ml_hi68", "mstar")},
            choice_flag=F(columns.attribute("out_of_support")),
        )
    )
    sql, params = chosen.query.sql_with_params()
    table, galaxies = CatalogueChoice._meta.db_table, Galaxy._meta.db_table
    values = ("model_id", "ml", "ml_lo68", "ml_hi68", "mstar", "out_of_support")
    stored = ", ".join(f"stored.{v}" for v in values)
    new = ", ".join(f"EXCLUDED.{v}" for v in values)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH chosen AS MATERIALIZED (SELECT q.choice_galaxy AS galaxy_id, q.choice_model AS model_id,"
            " q.choice_ml AS ml, q.choice_ml_lo68 AS ml_lo68, q.choice_ml_hi68 AS ml_hi68, q.choice_mstar AS mstar,"
            f" q.choice_flag = 1 AS out_of_support FROM ({sql}) AS q),"
            f" written AS (INSERT INTO {table} AS stored (galaxy_id, {', '.join(values)})"
            f" SELECT galaxy_id, {', '.join(values)} FROM chosen ON CONFLICT (galaxy_id) DO UPDATE"
            f" SET {', '.join(f'{v} = EXCLUDED.{v}' for v in values)}"
            f" WHERE ({stored}) IS DISTINCT FROM ({new}) RETURNING 1),"
            f" dropped AS (DELETE FROM {table} AS stored USING {galaxies} AS g WHERE g.id = stored.galaxy_id"
            " AND g.survey_id = %s AND NOT EXISTS (SELECT 1 FROM chosen WHERE chosen.galaxy_id = stored.galaxy_id)"
            " RETURNING 1)"
            " SELECT (SELECT count(*) FROM chosen), (SELECT count(*) FROM written) + (SELECT count(*) FROM dropped)",
            [*params, survey.pk],
        )
        held, written = cursor.fetchone()
    return held, written


def stale_surveys(now: datetime | None = None, settle_s: float = SETTLE_S) -> list[Survey]:
    """The public surveys whose stored choices are not current and whose last change is ``settle_s`` old."""
    now = now or database_now()
    changed = dict(CatalogueChange.objects.values("survey_id").annotate(last=Max("noted")).values_list("survey_id", "last"))
    stored = dict(CatalogueChoiceSet.objects.values_list("survey_id", "candidates"))
    stale = []
    for survey in public_surveys().order_by("pk"):
        last = changed.get(survey.pk)
        if last is not None and (now - last).total_seconds() < settle_s:
            continue  # still being written: refresh once it is done
        current = candidates_key(catalogue_candidates(survey))
        if last is not None or stored.get(survey.pk, "") != current:
            stale.append(survey)
    return stale


def refresh_stale(now: datetime | None = None, settle_s: float = SETTLE_S) -> dict[str, int]:
    """Refresh every stale public survey (:func:`stale_surveys`); forget the changes of the others (a
    prediction job's sample, a deleted survey), which no cone search reads. Survey name -> choices stored.
    Nothing elsewhere than on PostgreSQL, whose triggers alone note changes."""
    if connection.vendor != "postgresql":
        return {}
    refreshed = {}
    for survey in stale_surveys(now, settle_s):
        refreshed[survey.name] = refresh(survey)
        log.info("stored the catalogue's choice of %s galaxies of %s", refreshed[survey.name], survey.name)
    cutoff = (now or database_now()) - timedelta(seconds=settle_s)
    unread = CatalogueChange.objects.exclude(survey_id__in=public_surveys().values("pk")).filter(noted__lt=cutoff)
    unread._raw_delete(CatalogueChange.objects.db)
    return refreshed
