"""Workers on many machines that share no filesystem: everything one process writes and another reads
goes through object storage.

Each worker is started in a mount namespace of its own (``unshare -m``) over a private, empty
tmpfs ``MEDIA_ROOT``: it shares no file with the other worker or with the test (which ingests and
serves, as the web machine would). With the bucket as the storage a whole workflow, a second
survey's predictions, a TAP async job and a prediction job complete, and the workers' folders stay
empty; with local storage the same harness fails the first stage, since no worker can see the
ingested files (so the harness would catch sharing hidden behind a local path).
"""

from __future__ import annotations

import io
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from astropy.io.votable import parse_single_table
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from catalogue.celery import app
from catalogue.models import ModelSet, Prediction, PredictionJob, Run, Survey, TapJob
from catalogue.orchestration.prediction_jobs import refresh
from catalogue.services.ingest import ingest_bundle
from tests.bundle_helpers import ordinary_objids, sample_archive, sample_table
from tests.conftest import REDIS_URL, ROOT, WorkerProcess, _test_database_url
from tests.s3_server import S3Server

pytestmark = [pytest.mark.services, pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")]

#: In the worker's own mount namespace: a private tmpfs over its MEDIA_ROOT, the worker, then (once it
#: has stopped) the files left in that folder, written where the test can read them.
ISOLATED = (
    'mount -t tmpfs tmpfs "$MEDIA_ROOT" || exit 97; '
    '"$@" & worker=$!; trap "kill -TERM $worker" TERM INT; '
    'wait $worker; wait $worker; find "$MEDIA_ROOT" -type f > "$LEFT_IN_MEDIA"'
)


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


class Machines:
    """A cpu and a gpu worker, each alone in its mount namespace; what each left in its media folder."""

    def __init__(self, root: Path, storage_env: dict[str, str]):
        self.root, self.storage_env = root, storage_env
        self.workers: list[WorkerProcess] = []

    def start(self) -> Machines:
        app.conf.task_always_eager = False
        app.control.purge()
        for queue in ("cpu", "gpu"):
            media, report = self.root / f"{queue}-machine" / "media", self.root / f"{queue}-machine.left"
            media.mkdir(parents=True)
            env = {
                **__import__("os").environ,
                **self.storage_env,
                "CELERY_BROKER_URL": REDIS_URL,
                "CELERY_RESULT_BACKEND": REDIS_URL,
                "CELERY_TASK_ALWAYS_EAGER": "0",
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": _test_database_url(),
                "MEDIA_ROOT": str(media),
                "LEFT_IN_MEDIA": str(report),
            }
            wrap = lambda argv: ["unshare", "-m", "sh", "-c", ISOLATED, "sh", *argv]  # noqa: E731
            self.workers.append(WorkerProcess(app, queue, env, name=f"{queue}-machine", wrap=wrap).start())
        return self

    def stop(self) -> dict[str, list[str]]:
        """Stop both; the files each left in its own media folder."""
        for worker in self.workers:
            worker.stop()
        app.control.purge()
        app.conf.task_always_eager = True
        left = {}
        for queue in ("cpu", "gpu"):
            report = self.root / f"{queue}-machine.left"
            left[queue] = report.read_text().split() if report.exists() else ["(no report: the worker did not stop cleanly)"]
        return left


def _run_pipeline(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("run_pipeline", *args, "--timeout", "900", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s")


@pytest.mark.django_db(transaction=True)
def test_two_workers_with_nothing_shared_but_the_bucket_train_apply_and_answer(
    small_bundle, s3_server, settings, tmp_path, django_user_model
):
    bucket = s3_server.bucket()
    settings.STORAGES = s3_server.storages_setting(bucket)  # this process: the web machine
    ingest_bundle(small_bundle, "here")
    ingest_bundle(small_bundle, "there")
    machines = Machines(tmp_path, s3_server.environment(bucket)).start()
    try:
        _run_pipeline("--survey", "here", "--preset", "test", "--stages", "preprocess,cnn,features,gbm")
        trained = Run.objects.get(survey__name="here", stage="workflow")
        assert trained.status == "succeeded", (trained.message, trained.error[-3000:])
        _run_pipeline("--survey", "there", "--models", "here")
        applied = Run.objects.get(survey__name="there", stage="workflow")
        assert applied.status == "succeeded", (applied.message, applied.error[-3000:])
        there = Survey.objects.get(name="there")
        assert Prediction.objects.filter(galaxy__survey=there, model__name="g_morph").count() > 40

        # a TAP async job, run by the cpu worker, its result in the bucket, fetched through its signed link
        user = django_user_model.objects.create_user("ann", password="pw-ann-123")
        client = APIClient()
        client.force_authenticate(user)
        query = "SELECT TOP 5 objid, ml_pred FROM morphomass.catalogue WHERE survey = 'there' ORDER BY objid"
        location = client.post("/tap/async", {"LANG": "ADQL", "QUERY": query, "PHASE": "RUN"})["Location"]
        job_id = urllib.parse.urlparse(location).path.rstrip("/").rsplit("/", 1)[1]
        job = _wait(lambda: TapJob.objects.filter(pk=job_id, phase="COMPLETED").first(), 120, "the TAP job")
        reply = client.get(f"/tap/async/{job.pk}/results/result")
        assert reply.status_code == 302, reply.status_code
        rows = parse_single_table(io.BytesIO(requests.get(reply["Location"], timeout=30).content)).to_table()
        assert len(rows) == 5 and all(v > 0 for v in rows["ml_pred"])

        # a prediction job: uploaded here, unpacked and predicted by the workers
        objids = ordinary_objids(small_bundle, 12)
        archive = sample_archive(small_bundle, objids, tmp_path / "sample.zip")
        table = sample_table(small_bundle, objids, tmp_path / "sample.csv")
        model_set = ModelSet.objects.get(run__parent=trained).name  # the set the workflow trained
        payload = {"sample": [_upload(archive)], "table": _upload(table), "models": model_set}
        answer = client.post("/api/predict/jobs/", payload, format="multipart")
        assert answer.status_code == 201, answer.content
        job_id = answer.json()["id"]
        done = _wait(lambda: _ended(refresh(PredictionJob.objects.get(pk=job_id))), 300, "the prediction job")
        assert done.phase == "COMPLETED", (done.error, done.message)
        assert Prediction.objects.filter(galaxy__survey=done.survey).values("galaxy").distinct().count() == 12
    finally:
        left = machines.stop()
    keys = s3_server.keys(bucket)
    assert left == {"cpu": [], "gpu": []}, left  # neither machine kept a file of its own
    prefixes = {key.split("/", 1)[0] for key in keys}
    assert {"surveys", "arrays", "models", "tap", "jobs"} <= prefixes, sorted(prefixes)
    assert any(".shards/" in key for key in keys) and any(key.endswith("_g.fits") for key in keys)


@pytest.mark.django_db(transaction=True)
def test_the_same_workers_on_local_storage_cannot_see_the_ingest_and_the_first_stage_fails_saying_so(small_bundle, tmp_path):
    ingest_bundle(small_bundle, "unseen")
    machines = Machines(tmp_path, {"MORPHOMASS_STORAGE": "local"}).start()
    try:
        with pytest.raises(CommandError, match="stage preprocess .* failed: 60 of 60 items failed .*FileNotFoundError"):
            _run_pipeline("--survey", "unseen", "--preset", "test", "--stages", "preprocess,cnn")
    finally:
        machines.stop()
    workflow = Run.objects.get(survey__name="unseen", stage="workflow")
    preprocess = workflow.children.get(stage="preprocess")
    assert workflow.status == preprocess.status == "failed"
    assert preprocess.items_done == 0 and "FileNotFoundError" in preprocess.message, preprocess.message


def _ended(job: PredictionJob) -> PredictionJob | None:
    return job if job.phase not in PredictionJob.ACTIVE else None


def _upload(path: Path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(path.name, path.read_bytes())
