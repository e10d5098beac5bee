"""Suite-wide fixtures: real services, eager Celery by default, temporary media."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from tests.services import require_service, services_required, unreachable_reason

ROOT = Path(__file__).resolve().parent.parent


def _worker_redis_url(url: str) -> str:
    """The broker of this pytest process: under pytest-xdist each worker gets a Redis database of its own
    (gw0 the next after the configured one, and so on), so its Celery workers never take another's tasks."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parsed = urlparse(url)
    base = int(parsed.path.strip("/") or 0)
    return urlunparse(parsed._replace(path=f"/{base + 1 + int(worker[2:])}"))


REDIS_URL = _worker_redis_url(os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0")

#: Threads of the numeric libraries in each process of a parallel run (pytest-xdist workers, and the
#: Celery workers and commands they start): with as many processes as cores, more threads per process
#: only contend (OpenMP threads spin: a module's GBM fits took 18 times longer with three workers).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "MORPHOMASS_GBM_THREADS",  # LightGBM's own setting wins over OMP_NUM_THREADS (pipeline/learning/threads.py)
    ):
        os.environ.setdefault(_variable, "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # the libraries Django's start-up loaded before this file


def pytest_addoption(parser):
    parser.addoption(
        "--shuffle-targets",
        action="store_true",
        help="train the shared survey on shuffled M/L targets: tests/test_learning.py must then fail",
    )


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("longest-groups-first"):
        config.pluginmanager.register(_LongestGroupsFirst(), "longest-groups-first")
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url.startswith("postgres"):
        reason = unreachable_reason(database_url)
        if reason and services_required():
            pytest.exit(f"REQUIRE_SERVICES=1 but {reason}", returncode=3)


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Every test writes files under its own temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True, scope="session")
def _eager_celery():
    """Tasks run in-process unless a test asks for real workers."""
    from catalogue.celery import app

    # Point the app at the test broker before anything opens a connection: an empty URL
    # would silently mean amqp://localhost, where RabbitMQ listens and no worker does.
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = REDIS_URL
    app.conf.result_backend = REDIS_URL
    app.conf.task_always_eager = True
    yield app


@pytest.fixture
def deferred(_eager_celery):
    """Start runs and send jobs without sending their messages: inside a test's transaction, on_commit
    never fires (as if the message were lost on its way)."""
    _eager_celery.conf.task_always_eager = False
    yield
    _eager_celery.conf.task_always_eager = True


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service(REDIS_URL)
    return REDIS_URL


def _test_database_url() -> str:
    """The URL of the database the tests use, so a worker process sees the same rows."""
    from django.db import connection

    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else "")
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


class WorkerProcess:
    """One real Celery worker process on one queue, which a test may kill and restart."""

    def __init__(self, app, queue: str, env: dict, pool: str = "solo", name: str = "", wrap=None):
        self.app, self.queue, self.env, self.pool = app, queue, env, pool
        self.wrap = wrap  # argv -> argv: what the worker is started inside (tests/test_many_machines.py)
        self.hostname = f"{name or queue}-{uuid.uuid4().hex[:8]}@test"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        celery_bin = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
        extra = ["--concurrency", "1"] if self.pool == "prefork" else []
        wrap = self.wrap or (lambda argv: argv)
        self.proc = subprocess.Popen(
            wrap(
                [
                    celery_bin,
                    "-A",
                    "catalogue",
                    "worker",
                    "-Q",
                    self.queue,
                    "--pool",
                    self.pool,
                    *extra,
                    "--hostname",
                    self.hostname,
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ]
            ),
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        _wait_for_workers(self.app, {self.hostname}, [self.proc], timeout)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its children at once, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def worker_env(redis_url, _media_root) -> dict:
    """The environment of a worker process that shares the test's database, broker and media."""
    return {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "PYTHONPATH": str(ROOT),
        "MEDIA_ROOT": str(_media_root),
        "DATABASE_URL": _test_database_url(),
    }


@pytest.fixture
def start_worker(_eager_celery, worker_env):
    """Factory of real workers (killable, restartable); every one is stopped at the end."""
    app = _eager_celery
    app.conf.task_always_eager = False
    app.control.purge()
    started: list[WorkerProcess] = []

    def start(queue: str = "cpu", pool: str = "solo", env: dict | None = None, name: str = "") -> WorkerProcess:
        worker = WorkerProcess(app, queue, {**worker_env, **(env or {})}, pool, name)
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
        app.control.purge()
        app.conf.task_always_eager = True


@pytest.fixture
def celery_workers(start_worker):
    """One real worker per queue against Redis; yields {queue: hostname}.

    Each worker listens to one queue only, so a task's result tells which queue it went
    through. The broker's queues are purged first so stale messages cannot interfere.
    """
    yield {queue: start_worker(queue).hostname for queue in ("cpu", "gpu")}


def _wait_for_workers(app, hostnames: set[str], procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited early with code {proc.returncode}")
        replies = app.control.ping(timeout=1.0) or []
        seen = {name for reply in replies for name in reply}
        if hostnames <= seen:
            return
        time.sleep(0.5)
    pytest.fail(f"celery workers {sorted(hostnames)} did not answer within {timeout:.0f} s")


SYNTHETIC_N = 200
SYNTHETIC_SEED = 11


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory) -> Path:
    """A synthetic survey of a few hundred galaxies with one fault of each kind (made once)."""
    from pipeline.simulate.survey import simulate_survey

    out = tmp_path_factory.mktemp("synthetic") / "bundle"
    simulate_survey(out, n=SYNTHETIC_N, seed=SYNTHETIC_SEED, workers=2, with_faults=True)
    return out


@pytest.fixture(scope="session")
def synthetic_truth(synthetic_bundle):
    """truth.csv of the synthetic bundle as an astropy Table."""
    from astropy.table import Table

    return Table.read(synthetic_bundle / "truth.csv", format="ascii.csv")


SMALL_N = 60


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    """A synthetic survey of 60 galaxies, no faults: for tests that need a whole training, not its quality."""
    from pipeline.simulate.survey import simulate_survey

    out = tmp_path_factory.mktemp("small") / "bundle"
    simulate_survey(out, n=SMALL_N, seed=SYNTHETIC_SEED, workers=2)
    return out


#: The shared trained survey while it lives (tests/trained.py): made when a test first asks for it,
#: deleted after the last test that uses it (they run one after another: see below).
_SHARED: dict = {}


def shared_trained_survey(config, django_db_blocker, synthetic_bundle, tmp_path_factory):
    """The survey of :mod:`tests.trained` through every stage of the ``test`` preset, made once."""
    if "trained" in _SHARED:
        return _SHARED["trained"]
    from django.conf import settings

    from catalogue.models import Survey
    from catalogue.orchestration.start import start
    from catalogue.selectors import workflow_stages
    from catalogue.services.ingest import ingest_bundle
    from tests.trained import TRAINED_SURVEY, Trained, shuffle_targets, trained_bundle

    media = tmp_path_factory.mktemp("trained-media")
    bundle, no_i = trained_bundle(synthetic_bundle, tmp_path_factory.mktemp("trained"))
    old_media, settings.MEDIA_ROOT = settings.MEDIA_ROOT, media
    try:
        with django_db_blocker.unblock():
            ingest_bundle(bundle, TRAINED_SURVEY)
            survey = Survey.objects.get(name=TRAINED_SURVEY)
            if config.getoption("--shuffle-targets"):
                shuffle_targets(survey)
            workflow = start(survey, preset_name="test")  # every stage, through the one start path
            assert workflow.status == "succeeded", workflow.error or workflow.message
            stage_runs = {stage: run for stage, run, _ in workflow_stages(workflow)}
    finally:
        settings.MEDIA_ROOT = old_media
    _SHARED["trained"] = Trained(survey=survey, runs=stage_runs, media=media, bundle=bundle, no_i=no_i)
    _SHARED["blocker"] = django_db_blocker
    return _SHARED["trained"]


@pytest.fixture(scope="session")
def trained_survey(request, django_db_setup, django_db_blocker, synthetic_bundle, tmp_path_factory):  # noqa: ARG001
    """The shared trained survey, made outside every test's transaction (a test's would roll it back)."""
    return shared_trained_survey(request.config, django_db_blocker, synthetic_bundle, tmp_path_factory)


@pytest.fixture
def trained(trained_survey, settings):
    """The shared trained survey with its media in place, for a ``django_db`` test that only reads it
    (each such test rolls back what it changes)."""
    from catalogue.models import Survey

    shared = trained_survey
    settings.MEDIA_ROOT = shared.media
    if not Survey.objects.filter(pk=shared.survey.pk).exists():
        pytest.fail("the shared trained survey is gone: a transactional test emptied the tables before this one")
    return shared


def _uses_trained(item) -> bool:
    return "trained" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """The tests of the shared trained survey first and one after another (pytest-django's stable sort
    keeps them first among the database tests), then those that name a group of their own. Under
    pytest-xdist (--dist loadgroup) the survey's tests run in one worker, so the survey is trained once
    and no other test sees it, and every other test runs in the worker of its module (or its group),
    so a module's fixtures are made once."""
    users = [item for item in items if _uses_trained(item)]
    # Then the tests in groups of their own (the outage tests, which mostly wait on timers), so
    # that their waits overlap the work of other modules instead of ending the run.
    grouped = [item for item in items if not _uses_trained(item) and item.get_closest_marker("xdist_group")]
    items[:] = users + grouped + [item for item in items if not _uses_trained(item) and item not in grouped]
    for item in items:
        marker = item.get_closest_marker("xdist_group")  # a test may name a group of its own
        group = marker.args[0] if marker else "trained" if _uses_trained(item) else item.module.__name__
        if marker is None:
            item.add_marker(pytest.mark.xdist_group(group))
        _in_group(item, group)


def _in_group(item, group: str) -> None:
    """Give the test's id the ``@group`` suffix by which pytest-xdist's loadgroup schedules it.

    pytest-xdist 3.8 writes the suffix into ``item._nodeid``, which pytest 9 no longer reads
    (``nodeid`` comes from ``item._id``): without this every test would go its own way.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER") or item.nodeid.endswith(f"@{group}"):
        return
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{group}")


#: Groups of tests (a module, or a group a test names) that take longest under ``make test``, longest
#: first, as measured under make test. pytest-xdist hands the groups to its processes in
#: collection order (``--no-loadscope-reorder``); by its own default, most tests first, the slowest
#: groups, which have one to three tests, came last and the run ended with one process working alone
#: for minutes (15.6 min against 12.3 min in this order).
LONGEST_FIRST = (
    "outages",
    "trained",
    "tests.test_workflow",
    "tests.test_runs",
    "tests.test_liveness",
    "tests.test_schema_fuzz",
    "tests.test_preprocess_task",
    "tests.test_many_machines",
    "tests.test_registry",
    "tests.test_regression",
    "tests.test_browser",
    "tests.test_tap",
    "tests.test_gbm_stages",
    "tests.test_demo",
    "tests.test_security",
    "tests.test_inputs",
    "tests.test_webui",
    "tests.test_cnn",
    "tests.test_ingest",
    "tests.test_object_storage",
)


class _LongestGroupsFirst:
    """Puts the longest groups first, after pytest-django's own sort of the database tests (which would
    otherwise decide where a group first appears)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_group_of(item), len(rank)))


def _group_of(item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return marker.args[0] if marker else item.module.__name__


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test of the shared trained survey (and its module fixtures), the survey goes."""
    if not _uses_trained(item) or (nextitem is not None and _uses_trained(nextitem)) or "trained" not in _SHARED:
        return
    if nextitem is None:  # the session ends: its test database is already gone, and the survey with it
        _SHARED.clear()
        return
    from catalogue.models import Survey

    with _SHARED["blocker"].unblock():
        Survey.objects.filter(pk=_SHARED["trained"].survey.pk).delete()
    _SHARED.clear()
