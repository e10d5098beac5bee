"""Each galaxy's catalogue choice stored for the cone search, read only while PostgreSQL's triggers say it is current."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from astropy.io.votable import parse
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalogue import tasks
from catalogue.celery import app
from catalogue.models import CatalogueChange, CatalogueChoice, CatalogueChoiceSet, Galaxy, Prediction, Preprocessed, Survey
from catalogue.selectors import catalogue_candidates, survey_candidates, survey_candidates_by_id
from catalogue.selectors.catalogue_choices import candidates_key, stored_choices_current
from catalogue.selectors.clock import database_now
from catalogue.services import catalogue_choices
from pipeline.sky import healpix_index, unit_vector
from tests.test_catalogue_ml import MIXED_CHOICE, applied_set, galaxy, mixed_survey, predict

pytestmark = pytest.mark.django_db

CONE = "/scs/?RA=150.03&DEC=2&SR=0.1&VERB=2"


@pytest.fixture
def mixed():
    """Five galaxies, each with the model it should get in :data:`MIXED_CHOICE`."""
    return mixed_survey()


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the changes are noted by PostgreSQL's triggers")


def current(survey: Survey) -> bool:
    return stored_choices_current([survey.pk], survey_candidates([survey]))


def placed(survey: Survey) -> None:
    """Give the survey's galaxies their sky index, so that a cone search finds them."""
    for found in Galaxy.objects.filter(survey=survey):
        x, y, z = unit_vector(np.array([found.ra]), np.array([found.dec]))
        index = int(healpix_index(np.array([found.ra]), np.array([found.dec]))[0])
        Galaxy.objects.filter(pk=found.pk).update(healpix=index, sky_x=float(x[0]), sky_y=float(y[0]), sky_z=float(z[0]))


def cone(client: Client) -> tuple[dict[int, str | None], bytes, bool]:
    """The cone's catalogue model by objid (None: empty), the document, and whether the stored choices were read."""
    with CaptureQueriesContext(connection) as queries:
        reply = client.get(CONE)
    rows = parse(io.BytesIO(reply.content)).get_first_table().to_table()
    stored = any('catalogue_cataloguechoice"' in q["sql"] for q in queries.captured_queries)
    empty = np.ma.getmaskarray(rows["ml_model"])
    models = {int(r["objid"]): None if gone else str(r["ml_model"]) for r, gone in zip(rows, empty, strict=True)}
    return models, reply.content, stored


def test_refresh_stores_the_choice_every_reader_makes(mixed):
    survey, models = mixed
    assert not current(survey)  # nothing stored yet
    assert catalogue_choices.refresh(survey) == len(MIXED_CHOICE)
    stored = {c.galaxy.objid: c for c in CatalogueChoice.objects.select_related("galaxy", "model")}
    assert {objid: c.model.name for objid, c in stored.items()} == MIXED_CHOICE
    for objid, choice in stored.items():
        prediction = Prediction.objects.get(galaxy=choice.galaxy, model=choice.model)
        assert (choice.ml, choice.ml_lo68, choice.ml_hi68, choice.mstar, choice.out_of_support) == (
            prediction.ml_pred, prediction.ml_lo68, prediction.ml_hi68, prediction.mstar_pred, prediction.out_of_support
        ), objid  # fmt: skip
    assert stored[3].out_of_support and not stored[1].out_of_support  # g_morph flags them
    assert CatalogueChoiceSet.objects.get(survey=survey).candidates == candidates_key(catalogue_candidates(survey))
    assert current(survey) and not CatalogueChange.objects.filter(survey_id=survey.pk).exists()


def test_the_database_notes_every_change_a_choice_reads_and_nothing_else(mixed):
    survey, models = mixed
    first = Galaxy.objects.get(survey=survey, objid=1)

    def noted(change) -> bool:
        catalogue_choices.refresh(survey)
        assert current(survey)
        change()
        return not current(survey)

    assert not noted(lambda: Galaxy.objects.filter(pk=first.pk).update(morphology="disk", status="ok"))
    assert noted(lambda: Galaxy.objects.filter(pk=first.pk).update(mag_i=None))
    assert noted(lambda: Preprocessed.objects.filter(galaxy=first).update(i_band=""))
    assert noted(lambda: Prediction.objects.filter(galaxy=first, model=models["lgz"]).delete())
    assert noted(lambda: predict(models, first, ["lgz"]))
    upsert = Prediction(galaxy=first, model=models["gi"], ml_pred=9.0, out_of_support=False)
    assert noted(
        lambda: Prediction.objects.bulk_create(
            [upsert], update_conflicts=True, unique_fields=["galaxy", "model"], update_fields=["ml_pred"]
        )
    )
    other = Survey.objects.create(name="elsewhere")
    assert not noted(lambda: galaxy(other, 99, mag_i=15.0, image=True))  # another survey's galaxy
    assert noted(lambda: Galaxy.objects.filter(pk=first.pk).update(survey=other))


def test_the_cone_search_reads_the_stored_choices_only_while_current(mixed):
    survey, models = mixed
    placed(survey)
    client = Client()
    chosen, per_request, stored = cone(client)
    assert chosen == MIXED_CHOICE and not stored
    catalogue_choices.refresh(survey)
    chosen, document, stored = cone(client)
    assert chosen == MIXED_CHOICE and stored and document == per_request  # the same bytes either way
    # galaxy 1 loses its gi_images prediction: the next answer chooses per request, at once
    Prediction.objects.filter(galaxy__objid=1, galaxy__survey=survey, model=models["gi_images"]).delete()
    chosen, _, stored = cone(client)
    assert chosen == {**MIXED_CHOICE, 1: "gi_morph"} and not stored
    catalogue_choices.refresh(survey)
    chosen, _, stored = cone(client)
    assert chosen == {**MIXED_CHOICE, 1: "gi_morph"} and stored
    # a survey whose set is no longer applied keeps no choices: its stored ones are not read
    survey.runs.filter(stage="predict").update(status="failed")
    chosen, _, stored = cone(client)
    assert chosen == dict.fromkeys(MIXED_CHOICE, "") and not stored  # empty cells


def test_the_sweep_waits_for_changes_to_settle_and_forgets_those_no_search_reads(mixed):
    survey, models = mixed
    private = Survey.objects.create(name="a job's sample", owner=_user())
    sample = galaxy(private, 1, mag_i=15.0, image=True)  # notes a change for the private survey
    assert CatalogueChange.objects.filter(survey_id=private.pk).exists()
    assert catalogue_choices.refresh_stale() == {}  # the mixed survey was written just now: not settled
    later = database_now() + timedelta(seconds=catalogue_choices.SETTLE_S + 1)
    assert catalogue_choices.refresh_stale(now=later) == {"mixed": len(MIXED_CHOICE)}
    assert current(survey) and not CatalogueChange.objects.filter(survey_id=private.pk).exists()
    assert catalogue_choices.refresh_stale(now=later) == {}  # current: nothing to do
    # beat's task, run here as a worker runs it, once a change is older than the settling time
    Prediction.objects.filter(galaxy__survey=survey, model=models["lgz"]).update(ml_pred=2.5)
    CatalogueChange.objects.update(noted=F("noted") - timedelta(seconds=catalogue_choices.SETTLE_S + 1))
    assert tasks.refresh_catalogue_choices.apply().get() == {"mixed": len(MIXED_CHOICE)}
    assert CatalogueChoice.objects.get(galaxy__survey=survey, galaxy__objid=5).ml == 2.5
    survey.delete()  # its choices and their record go with it; the changes its deletion noted, at the next sweep
    assert not CatalogueChoice.objects.exists() and not CatalogueChoiceSet.objects.exists()
    assert catalogue_choices.refresh_stale(now=later + timedelta(hours=1)) == {} and not CatalogueChange.objects.exists()
    assert sample.pk and "refresh-catalogue-choices" in app.conf.beat_schedule
    assert app.conf.beat_schedule["refresh-catalogue-choices"]["task"] in app.tasks


def test_candidates_of_many_surveys_in_one_go_are_each_surveys_own():
    one, two, bare = (Survey.objects.create(name=n) for n in ("one", "two", "bare"))
    applied_set(one)
    applied_set(two, skipped=("gi_images",), val_l1={"gi_morph": 1.0, "lgz": 0.5, "constant": 3.0})
    together = dict(survey_candidates_by_id([bare.pk, two.pk, one.pk]))
    assert set(together) == {one.pk, two.pk}
    assert [c.name for c in together[two.pk]] == ["lgz", "gi_morph", "constant"]
    assert list(together[one.pk]) == catalogue_candidates(one) and catalogue_candidates(bare) == []


def _user():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("sample-owner", password="x")


def test_a_refresh_writes_only_the_choices_that_changed(mixed):
    """A refresh rewrites the rows that differ and deletes those of galaxies left without a choice."""
    survey, models = mixed
    catalogue_choices.refresh(survey)

    def places() -> dict[int, str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT galaxy_id, ctid::text FROM catalogue_cataloguechoice")
            return dict(cursor.fetchall())

    before = places()
    first, last = (Galaxy.objects.get(survey=survey, objid=objid) for objid in (1, 5))
    Prediction.objects.filter(galaxy=first, model=models["gi_images"]).update(ml_pred=7.0)
    assert catalogue_choices.refresh(survey) == len(MIXED_CHOICE)
    after = places()
    assert {pk for pk in before if after[pk] != before[pk]} == {first.pk}  # the others were left in place
    assert CatalogueChoice.objects.get(galaxy=first).ml == 7.0
    Prediction.objects.filter(galaxy=last).delete()
    assert catalogue_choices.refresh(survey) == len(MIXED_CHOICE) - 1
    assert set(places()) == set(before) - {last.pk} and current(survey)
    steady = places()
    assert catalogue_choices.refresh(survey) == len(MIXED_CHOICE) - 1 and places() == steady  # nothing to write
