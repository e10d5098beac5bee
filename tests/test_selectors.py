"""The reads shared by stages, pages and the API: only runs that succeeded are ever "the latest"."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from catalogue import selectors
from catalogue.models import FeatureSet, FeatureVector, Galaxy, Run, Survey
from pipeline import gz2

pytestmark = pytest.mark.django_db


def _features_run(survey: Survey, status: str, finished_minutes_ago: float, version: int, galaxy: Galaxy, value: float):
    run = Run.objects.create(
        stage="features",
        survey=survey,
        status=status,
        preset="test",
        finished=timezone.now() - timedelta(minutes=finished_minutes_ago),
    )
    feature_set = FeatureSet.objects.create(name="cnn1.gz2", version=version, survey=survey, run=run)
    FeatureVector.objects.create(galaxy=galaxy, feature_set=feature_set, values=np.full(gz2.N_ANSWERS, value, np.float32))
    return run


def test_the_latest_run_of_a_stage_is_the_newest_that_succeeded():
    survey = Survey.objects.create(name="latest")
    assert selectors.latest_succeeded_run(survey, "gbm") is None
    older = Run.objects.create(stage="gbm", survey=survey, status="succeeded", finished=timezone.now() - timedelta(hours=2))
    newer = Run.objects.create(stage="gbm", survey=survey, status="succeeded", finished=timezone.now() - timedelta(hours=1))
    Run.objects.create(stage="gbm", survey=survey, status="failed", finished=timezone.now())
    Run.objects.create(stage="gbm", survey=survey, status="cancelled", finished=timezone.now())
    assert selectors.latest_succeeded_run(survey, "gbm") == newer
    assert list(selectors.succeeded_runs(survey, "gbm")) == [newer, older]


def test_predicted_gz2_ignores_the_vectors_of_failed_features_runs():
    survey = Survey.objects.create(name="gz2pred")
    galaxy = Galaxy.objects.create(survey=survey, objid=7, ra=1.0, dec=2.0, z=0.05)
    assert selectors.predicted_gz2(galaxy) is None
    _features_run(survey, "failed", 0, 3, galaxy, 0.9)  # the highest version, but its run failed
    assert selectors.predicted_gz2(galaxy) is None
    _features_run(survey, "succeeded", 60, 1, galaxy, 0.2)
    _features_run(survey, "cancelled", 1, 4, galaxy, 0.7)
    np.testing.assert_allclose(selectors.predicted_gz2(galaxy), 0.2)
    _features_run(survey, "succeeded", 30, 2, galaxy, 0.4)
    np.testing.assert_allclose(selectors.predicted_gz2(galaxy), 0.4)  # the newest run that succeeded
