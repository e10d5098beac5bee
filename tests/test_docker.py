"""The Docker deployment: the compose file is valid and wires every service the way the
settings read them. ``docker compose config`` checks it where the compose plugin exists;
everywhere the file is also parsed and checked here, service by service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catalogue.celery import CPU_QUEUE, GPU_QUEUE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yml"
APP_SERVICES = {"web", "worker-cpu", "worker-gpu", "beat", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def has_compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not has_compose_plugin(), reason="no docker compose here: the parsed checks below stand in")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "SECRET_KEY": "x" * 50, "MINIO_ROOT_PASSWORD": "y" * 12},
    )
    assert result.returncode == 0, result.stderr


def test_every_service_is_there_with_a_healthcheck(compose):
    services = compose["services"]
    assert set(services) == APP_SERVICES | {"postgres", "redis", "minio"}
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
    assert services["postgres"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")


def test_app_services_build_from_files_that_exist(compose):
    for name in APP_SERVICES:
        build = compose["services"][name]["build"]
        dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for copied in re.findall(r"^COPY (.+) \./?$", dockerfile.read_text(), re.MULTILINE):
            for source in copied.split():
                assert source == "." or (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is not here"
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", gpu, re.MULTILINE) and "KERAS_BACKEND=jax" in gpu


def test_services_are_wired_through_environment_variables_the_settings_read(compose):
    settings_source = (ROOT / "catalogue" / "settings.py").read_text()
    services = compose["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        for variable in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "MEDIA_ROOT", "MORPHOMASS_VAR_DIR"):
            assert variable in env, f"{name} lacks {variable}"
            assert f'"{variable}"' in settings_source, f"settings never read {variable}"
        assert "@postgres:5432/" in env["DATABASE_URL"] and env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["DEBUG"] == "0" and env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # no default secret
        # no shared media volume: every file is in the bucket (MORPHOMASS_STORAGE=s3), as on many machines
        assert not any(v.startswith("media:") for v in services[name].get("volumes", [])), name
        assert env["MORPHOMASS_STORAGE"] == "s3" and env["AWS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        for variable in ("MORPHOMASS_STORAGE", "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL", "AWS_S3_PUBLIC_ENDPOINT_URL"):
            assert f'"{variable}"' in settings_source, f"settings never read {variable}"
    assert services["worker-gpu"]["environment"]["KERAS_BACKEND"].startswith("${KERAS_BACKEND:-jax")
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_USER"] in services["web"]["environment"]["DATABASE_URL"]


def test_workers_take_the_queues_the_tasks_are_routed_to_and_the_gpu_is_reserved(compose):
    services = compose["services"]
    assert re.search(rf"worker -Q {CPU_QUEUE}\b", services["worker-cpu"]["command"])
    assert re.search(rf"worker -Q {GPU_QUEUE} --concurrency 1\b", services["worker-gpu"]["command"])
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "gunicorn catalogue.wsgi" in services["web"]["command"] and "migrate" in services["web"]["command"]
    assert "beat" in services["beat"]["command"] and "flower" in services["flower"]["command"]
    for worker in ("worker-cpu", "worker-gpu"):  # started once the database is migrated
        assert services[worker]["depends_on"]["web"]["condition"] == "service_healthy"


def test_named_volumes_hold_the_database_and_the_objects(compose):
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    assert used <= declared and {"pgdata", "objects"} <= used and "media" not in used
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    minio = compose["services"]["minio"]
    assert "objects:/data" in minio["volumes"] and minio["command"].startswith("server /data")
    assert minio["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")  # no default secret
    web = compose["services"]["web"]
    assert "storage_ready" in web["command"] and web["depends_on"]["minio"]["condition"] == "service_healthy"


@pytest.mark.django_db
def test_the_web_healthcheck_url_answers(client):
    assert client.get("/healthz").json() == {"database": "ok"}


def test_with_debug_off_the_app_serves_its_collected_static_files(tmp_path):
    """What the web container does: DEBUG=0, collectstatic at build time, whitenoise serving."""
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "k" * 50,
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    probe = (
        "import django; django.setup(); from django.test import Client; c = Client(HTTP_HOST='localhost'); "
        "print(c.get('/static/admin/css/base.css').status_code, c.get('/static/nothing.css').status_code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "catalogue.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["200", "404"], done.stderr
