"""Production settings and how scripts authenticate: tokens (Basic auth only when enabled),
HTTPS settings that pass ``check --deploy``, and one active run per survey answered with a 409."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalogue.models import Run, Survey

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED = {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "ALLOWED_HOSTS": "morphomass.example.org"}


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "DATABASE_URL": "", **env}
    )


@pytest.mark.django_db
def test_a_script_authenticates_with_a_token_made_by_the_command_and_basic_auth_is_off():
    User.objects.create_user("robot", password="long-secret-pass", is_staff=True)
    call_command("drf_create_token", "robot")
    key = Token.objects.get(user__username="robot").key
    survey = Survey.objects.create(name="tokens")
    start = {"survey": survey.name, "stage": "preprocess", "preset": "test"}

    anonymous = APIClient().post("/api/runs/", start, format="json")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Token"
    with_token = APIClient().post("/api/runs/", start, format="json", HTTP_AUTHORIZATION=f"Token {key}")
    assert with_token.status_code == 201, with_token.content
    assert Run.objects.get(pk=with_token.json()["id"]).started_by.username == "robot"
    basic = base64.b64encode(b"robot:long-secret-pass").decode()
    refused = APIClient().post("/api/runs/", start, format="json", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert refused.status_code == 401  # Basic auth is off unless MORPHOMASS_BASIC_AUTH=1


@pytest.mark.django_db
def test_staff_manage_tokens_in_the_admin(client):
    client.force_login(User.objects.create_superuser("boss", "b@example.org", "x"))
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200


def test_basic_auth_is_there_only_when_enabled():
    code = "from catalogue import settings; print('BasicAuthentication' in ' '.join(settings.API_AUTHENTICATION))"
    assert _run("-c", code, env={}).stdout.strip() == "False"
    assert _run("-c", code, env={"MORPHOMASS_BASIC_AUTH": "1"}).stdout.strip() == "True"


def test_with_https_on_check_deploy_reports_no_issues():
    done = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", env={**DEPLOYED, "MORPHOMASS_HTTPS": "1"})
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout
    plain = _run("manage.py", "check", "--deploy", env=DEPLOYED)
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr  # without it, the operator is told what is missing


def test_with_https_on_plain_http_is_redirected_and_answers_carry_hsts():
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "plain = c.get('/api/', HTTP_HOST='morphomass.example.org')\n"
        "secure = c.get('/api/', HTTP_HOST='morphomass.example.org', HTTP_X_FORWARDED_PROTO='https')\n"
        "health = c.get('/healthz', HTTP_HOST='morphomass.example.org')\n"
        "hsts = secure['Strict-Transport-Security']\n"
        "print(plain.status_code, plain['Location'], secure.status_code, hsts, health.status_code, sep='|')\n"
    )
    env = {**DEPLOYED, "MORPHOMASS_HTTPS": "1", "DJANGO_SETTINGS_MODULE": "catalogue.settings"}
    plain, location, secure, hsts, health = _run("-c", code, env=env).stdout.strip().split("|")
    assert (plain, location, secure) == ("301", "https://morphomass.example.org/api/", "200")
    assert hsts == "max-age=31536000; includeSubDomains; preload"
    assert health == "200"  # container healthchecks keep plain http


@pytest.mark.django_db
def test_a_single_stage_started_while_a_workflow_runs_is_refused_with_409_and_the_workflow_goes_on():
    survey = Survey.objects.create(name="busy")
    workflow = Run.objects.create(stage="workflow", survey=survey, status="running", config={"stages": ["gbm", "predict"]})
    Run.objects.create(stage="gbm", survey=survey, status="running", parent=workflow)
    client = APIClient()
    client.force_authenticate(User.objects.create_user("boss", password="x", is_staff=True))
    for stage in ("predict", "experiments", "preprocess"):
        response = client.post("/api/runs/", {"survey": "busy", "stage": stage, "preset": "test"}, format="json")
        assert response.status_code == 409 and response.json()["active_run"] == workflow.pk, response.content
        assert f"run #{workflow.pk} (workflow, running)" in response.json()["detail"]
    workflow.refresh_from_db()
    assert workflow.status == "running" and Run.objects.filter(survey=survey).count() == 2


def test_a_web_process_loads_its_views_and_freezes_its_heap_before_serving():
    """Full collections walked the science stack inside requests (150-200 ms); the WSGI module freezes it at start."""
    import subprocess
    import sys

    probe = "import gc, sys; import catalogue.wsgi; print(gc.get_freeze_count(), 'catalogue.api.views' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    frozen, views_loaded = done.stdout.split()
    assert int(frozen) > 100_000 and views_loaded == "True"
