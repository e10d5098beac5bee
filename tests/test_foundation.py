"""The foundation: migrations, database constraints, the packed-vector field, settings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from catalogue.models import FeatureSet, FeatureVector, Galaxy, GZ2Votes, Run, Survey

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


@pytest.fixture
def survey():
    return Survey.objects.create(name="s1")


def test_migrations_are_complete_and_applied():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
    tables = set(connection.introspection.table_names())
    for model in (Survey, Galaxy, GZ2Votes, FeatureVector, Run):
        assert model._meta.db_table in tables


def test_duplicate_objid_in_one_survey_is_rejected(survey):
    Galaxy.objects.create(survey=survey, objid=1, ra=1, dec=1, z=0.05)
    with pytest.raises(IntegrityError), transaction.atomic():
        Galaxy.objects.create(survey=survey, objid=1, ra=2, dec=2, z=0.06)
    other = Survey.objects.create(name="s2")
    Galaxy.objects.create(survey=other, objid=1, ra=1, dec=1, z=0.05)  # same id, other survey: fine


@pytest.mark.parametrize(
    "fields",
    [
        {"ml_g": 2.0, "ml_g_err": -0.1},
        {"ml_g": 2.0, "ml_g_err": 0.0},
        {"ml_g": -1.0, "ml_g_err": 0.1},
        {"split": "other"},
        {"status": "maybe"},
        {"dec": 91.0},
        {"status": "ok", "z": None},
    ],
)
def test_bad_galaxy_rows_are_rejected_by_the_database(survey, fields):
    values = {"survey": survey, "objid": 7, "ra": 10.0, "dec": 0.0, "z": 0.05, **fields}
    with pytest.raises(IntegrityError), transaction.atomic():
        Galaxy.objects.create(**values)


def test_rejected_galaxy_may_lack_redshift(survey):
    galaxy = Galaxy.objects.create(survey=survey, objid=8, status="rejected", status_reason="missing z")
    assert galaxy.z is None


def test_training_run_progress_is_bounded():
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(stage="preprocess", progress=1.5)


def test_feature_vector_round_trips_float32_bytes(survey):
    galaxy = Galaxy.objects.create(survey=survey, objid=9, ra=1, dec=1, z=0.1)
    fs = FeatureSet.objects.create(name="lum", feature_names=["a", "b", "c"])
    values = np.array([1.5, -2.25, 3e10], dtype=np.float32)
    FeatureVector.objects.create(galaxy=galaxy, feature_set=fs, values=values)
    stored = FeatureVector.objects.get()
    assert stored.values.dtype == np.float32
    np.testing.assert_array_equal(stored.values, values)
    assert stored.as_dict() == {"a": 1.5, "b": -2.25, "c": pytest.approx(3e10)}
    raw = FeatureVector.objects.values_list("values", flat=True).get()
    assert len(bytes(raw)) == 12  # 3 x 4 bytes, not JSON, not one row per number


def test_home_page_lists_surveys(client, survey):
    Galaxy.objects.create(survey=survey, objid=1, ra=1, dec=1, z=0.05)
    page = client.get("/")
    assert page.status_code == 200
    assert b"s1" in page.content
    assert client.get("/surveys/s1/").status_code == 200
    browser = client.get("/catalogue/?survey=s1")
    assert browser.status_code == 200 and b"solMass/solLum" in browser.content  # units in the column heads


def test_home_page_refreshes_while_a_run_is_active(client, survey):
    Run.objects.create(stage="preprocess", survey=survey, status="running", progress=0.4, message="40 of 100")
    for _ in range(15):  # newer, finished runs push it out of the recent list, not out of "in progress"
        Run.objects.create(stage="cnn", survey=survey, status="succeeded", progress=1.0)
    page = client.get("/").content.decode()
    assert 'http-equiv="refresh"' in page and "40 of 100" in page
    Run.objects.update(status="succeeded", progress=1.0)
    assert 'http-equiv="refresh"' not in client.get("/").content.decode()


def test_science_modules_import_without_django():
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, pipeline, pipeline.simulate\n"
        "names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names), any(m.split('.')[0] in ('django', 'catalogue') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 10 and out[1] == "False"
