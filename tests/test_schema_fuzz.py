"""The OpenAPI schema describes every response: schemathesis, every check, anonymous and as staff.

schemathesis reads /api/schema/ from a live server, generates requests from it (examples,
coverage of boundaries, random fuzzing, stateful sequences) and checks each response against
the schema: status codes, content types, bodies, headers, that schema-valid requests are
accepted and invalid ones refused, and that no request gives a 500. The per-operation
settings it reads are in the repository's schemathesis.toml, with the reason for each.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from catalogue.models import ExperimentResult, Galaxy, Prediction, Run, TrainedModel
from tests.test_api import make_survey

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Bounded so that both identities together (run at once) take about two minutes on two cores (25 took
#: 164 s of a 15-minute CI run; 15 still reaches every operation with its examples, boundaries and fuzzing).
MAX_EXAMPLES = 15
SEED = 20261201


@pytest.fixture
def served_catalogue(monkeypatch):
    """A survey with predictions, a run of each status and an experiment row, unthrottled."""
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1000000/minute", "user": "1000000/minute", "predict": "1000000/minute"}
    )
    cache.clear()
    survey = make_survey("fuzz", 4)
    trained = Run.objects.create(stage="gbm", survey=survey, status="succeeded", preset="test")
    Run.objects.create(stage="predict", survey=survey, status="running", preset="test")
    model = TrainedModel.objects.create(kind="gbm", name="g_morph", survey=survey, run=trained, preset="test")
    Prediction.objects.bulk_create(
        Prediction(galaxy=g, model=model, ml_pred=1.0 + 0.01 * i, ml_lo68=0.9, ml_hi68=1.2, support_reasons=["z"])
        for i, g in enumerate(Galaxy.objects.filter(survey=survey)[:40])
    )
    ExperimentResult.objects.create(experiment="table1", method="g_morph", l1=1.1, n=20, survey=survey, run=trained)
    return survey


def schemathesis_started(url: str, *headers: str) -> subprocess.Popen:
    """A schemathesis run against the live server, in the background (the two identities run at once)."""
    command = [str(SCHEMATHESIS), "run", f"{url}/api/schema/", "--checks", "all", "--no-color"]
    command += ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)]
    for header in headers:
        command += ["-H", header]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def schemathesis_output(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-6000:]
    return output


HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def cases(output: str) -> tuple[int, int]:
    """(generated, passed) from schemathesis's summary line."""
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found, output[-2000:]
    return int(found[1]), int(found[2])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("served_catalogue")
def test_schemathesis_finds_nothing_anonymous_or_staff(live_server):
    schema = Client().get("/api/schema/", {"format": "json"}).json()
    n_operations = sum(1 for methods in schema["paths"].values() for method in methods if method in HTTP_METHODS)
    staff = User.objects.create_superuser("fuzz-staff", "staff@example.org", "not-used")
    runs = [
        schemathesis_started(live_server.url),
        schemathesis_started(live_server.url, f"Authorization: Token {Token.objects.create(user=staff).key}"),
    ]
    anonymous, as_staff = (schemathesis_output(run) for run in runs)
    for who, output in (("anonymous", anonymous), ("staff", as_staff)):
        generated, passed = cases(output)
        print(f"schemathesis as {who}: {generated} cases, {passed} passed")  # the figures the closing notes quote
        assert generated > 500 and passed == generated, output[-2000:]
        assert n_operations >= 18 and f"{n_operations} selected / {n_operations} total" in output  # none filtered out
    # As staff the protected operations are reached, not answered 401 throughout.
    assert "Authentication failed" in anonymous and "Authentication failed" not in as_staff
