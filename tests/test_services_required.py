"""REQUIRE_SERVICES=1 turns a missing service into a failure; without it, a skip with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER_TEST = "tests/test_queue.py::test_real_workers_run_each_queue_and_return_results"


def run_pytest(env_updates: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REQUIRE_SERVICES"}
    env.update(env_updates)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", WORKER_TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.smoke
def test_missing_broker_fails_when_services_are_required():
    result = run_pytest({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "REQUIRE_SERVICES": "1"})
    assert result.returncode != 0
    assert "REQUIRE_SERVICES=1 but redis at 127.0.0.1:1 is unreachable" in result.stdout


@pytest.mark.smoke
def test_missing_broker_skips_otherwise():
    result = run_pytest({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "unreachable" in result.stdout


def test_missing_database_stops_the_run_when_services_are_required():
    result = run_pytest({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/test", "REQUIRE_SERVICES": "1"})
    assert result.returncode == 3
    assert "postgres at 127.0.0.1:1 is unreachable" in result.stdout + result.stderr
