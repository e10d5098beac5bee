"""A service under outage: a private PostgreSQL and Redis, real workers and beat on them, a survey to run.

Used by ``tests/test_outages.py`` and ``benchmarks/outages.py``. Every process of the rig (the
cpu and gpu workers, celery beat, the management commands) runs with the *default* liveness
settings against the rig's own services, so a test may stop or kill those without touching
the machine's shared ones; the rig reads the ledger with psycopg, never through the test's
Django connection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.private_services import PrivatePostgres, PrivateRedis

ROOT = Path(__file__).resolve().parent.parent

#: Settings a test run may have set that would make the rig's recovery faster than production's.
_NOT_DEFAULTS = (
    "MORPHOMASS_HEARTBEAT_S",
    "MORPHOMASS_HEARTBEAT_SILENCE_S",
    "MORPHOMASS_RESEND_AFTER_S",
    "MORPHOMASS_WORKFLOW_STALL_S",
    "MORPHOMASS_QUEUE_WAIT_S",
    "MORPHOMASS_TASK_HARD_LIMITS",
    "CELERY_RESTORE_INTERVAL_S",
)


class OutageRig:
    """Private services, a survey ingested into them, and the workers and beat that serve it."""

    def __init__(self, folder: Path, bundle: Path, *, appendonly: bool = False, faults: dict | None = None):
        self.folder, self.bundle = folder, bundle
        self.postgres = PrivatePostgres(folder / "postgres")
        self.redis = PrivateRedis(folder / "redis", appendonly=appendonly)
        self.processes: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if k not in _NOT_DEFAULTS and not k.startswith("PYTEST")}
        self.env.update(
            DATABASE_URL=self.postgres.url,
            CELERY_BROKER_URL=self.redis.url,
            CELERY_RESULT_BACKEND=self.redis.url,
            CELERY_TASK_ALWAYS_EAGER="0",
            MEDIA_ROOT=str(folder / "media"),
            PYTHONPATH=str(ROOT),
            MORPHOMASS_FAULTS=json.dumps(faults or {}),
        )

    # --- set-up ------------------------------------------------------------------------

    def start(self, survey: str) -> OutageRig:
        """Create the services, migrate, ingest the bundle as ``survey`` and start two workers and beat."""
        self.postgres.create()
        self.redis.start()
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("ingest_survey", str(self.bundle), "--name", survey)
        for queue in ("cpu", "gpu"):
            self._celery(
                "worker",
                "-Q",
                queue,
                "--pool",
                "solo",
                "--hostname",
                f"{queue}-{uuid.uuid4().hex[:6]}@rig",
                "--without-gossip",
                "--without-mingle",
            )
        self._celery("beat", "--schedule", str(self.folder / "beat-schedule"))
        self.wait_for_workers(2)
        return self

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _celery(self, *args: str) -> None:
        celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
        log = open(self.folder / f"{args[0]}-{len(self.processes)}.log", "w")  # noqa: SIM115 - closed with the process
        command = [celery, "-A", "catalogue", *args, "--loglevel", "INFO"]
        self.processes.append(subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True))

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        """Until ``n`` workers logged that they are ready (consuming from the broker)."""

        def ready() -> bool:
            logs = sorted(self.folder.glob("worker-*.log"))
            return sum(" ready." in log.read_text(errors="replace") for log in logs) >= n

        self.wait_until(ready, timeout, f"{n} workers to be ready")

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.redis.stop()
        self.postgres.destroy()

    # --- the ledger, read directly -------------------------------------------------------

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.postgres.url.replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, *params):
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None

    def start_workflow(self, survey: str, stages: list[str]) -> int:
        """Start ``stages`` on the workers through the CLI; returns the id of what it started (a workflow,
        or one stage's run for one stage)."""
        self.manage("run_pipeline", "--survey", survey, "--preset", "test", "--stages", ",".join(stages), "--no-wait")
        return self.scalar("SELECT max(id) FROM catalogue_run WHERE parent_id IS NULL")

    def wait_until(self, condition: Callable[[], object], timeout: float, what: str, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = condition()
            except psycopg.OperationalError:
                found = None  # the rig's own database is down: not yet
            if found:
                return found
            time.sleep(every)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}:\n{self.describe()}")

    def stage_status(self, workflow: int, stage: str) -> str | None:
        """The status of the workflow's (last) run of ``stage``, None before it starts."""
        sql = "SELECT status FROM catalogue_run WHERE parent_id = %s AND stage = %s ORDER BY id DESC"
        return self.scalar(sql, workflow, stage)

    def running_chunks(self, stage: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM catalogue_runchunk c JOIN catalogue_run r ON r.id = c.run_id "
            "WHERE r.stage = %s AND c.state = 'running'",
            stage,
        )

    def wait_for_workflow(self, workflow: int, timeout: float) -> float:
        """Wait for the workflow to succeed; returns when it did (time.monotonic). Fails if it ends otherwise."""

        def ended():
            status, message = self.query("SELECT status, message FROM catalogue_run WHERE id = %s", workflow)[0]
            if status in ("failed", "cancelled"):
                raise AssertionError(f"workflow {workflow} {status}: {message}\n{self.describe()}")
            return status == "succeeded"

        self.wait_until(ended, timeout, f"workflow {workflow} to succeed", every=1.0)
        return time.monotonic()

    def describe(self) -> str:
        """The runs and their chunks, for a failure message."""
        try:
            runs = self.query("SELECT id, stage, status, message FROM catalogue_run ORDER BY id")
            chunks = self.query(
                "SELECT run_id, state, count(*), sum(sends), max(attempts) FROM catalogue_runchunk GROUP BY 1, 2 ORDER BY 1, 2"
            )
        except psycopg.OperationalError as exc:
            return f"(the rig's database is down: {exc})"
        return "\n".join([*(f"run {r}" for r in runs), *(f"chunks {c}" for c in chunks)])

    def missing_or_twice(self) -> dict[str, int]:
        """What the outage must not cause, per product: rows missing or stored twice (0 each when whole).

        Every galaxy preprocessed; every preprocessed galaxy once in each feature set; every
        stage's items counted once in its run (the ledger's sum equals the items planned).
        (The database's unique constraints already refuse a second row of a galaxy's result.)
        """
        checks = {
            "galaxies not preprocessed": "SELECT count(*) FROM catalogue_galaxy g "
            "WHERE NOT EXISTS (SELECT 1 FROM catalogue_preprocessed p WHERE p.galaxy_id = g.id AND p.status = 'ok')",
            "feature vectors missing or twice": "SELECT coalesce(sum(abs(n - (SELECT count(*) FROM catalogue_preprocessed "
            "WHERE status = 'ok'))), 0) FROM (SELECT fs.id, count(fv.id) AS n FROM catalogue_featureset fs "
            "LEFT JOIN catalogue_featurevector fv ON fv.feature_set_id = fs.id GROUP BY fs.id) AS per_set",
            "items miscounted": "SELECT count(*) FROM catalogue_run r WHERE r.stage <> 'workflow' AND (r.items_failed > 0 "
            "OR r.items_done <> r.items_total OR r.items_total <> (SELECT coalesce(sum(n_done), 0) FROM catalogue_runchunk c "
            "WHERE c.run_id = r.id AND c.state = 'done'))",
        }
        return {name: int(self.scalar(sql)) for name, sql in checks.items()}
