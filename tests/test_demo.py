"""``make demo``'s preparation: every stage once, an admin whose password is printed, and a rerun that redoes nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from catalogue.models import Prediction, Run


@pytest.mark.django_db
def test_demo_data_takes_the_survey_through_every_stage_once(small_bundle, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("demo_data", out=str(small_bundle), preset="test")
    first = capsys.readouterr().out
    succeeded = Run.objects.filter(survey__name="demo", status="succeeded").exclude(stage="workflow")
    stages = set(succeeded.values_list("stage", flat=True))
    assert stages == {"preprocess", "cnn", "features", "gbm", "experiments", "predict"}
    assert Prediction.objects.filter(galaxy__survey__name="demo", model__name="g_morph").count() > 50
    password = first.split("password '")[1].split("'")[0]
    assert authenticate(username="admin", password=password) is not None
    stage_runs = Run.objects.exclude(stage="workflow").count()
    call_command("demo_data", out=str(small_bundle), preset="test")
    again = capsys.readouterr().out
    assert Run.objects.exclude(stage="workflow").count() == stage_runs  # nothing redone
    rerun = Run.objects.filter(stage="workflow").latest("created")
    assert rerun.status == "succeeded" and set(rerun.config["reused"]) == stages
    assert f"password '{password}'" in again  # the same account
