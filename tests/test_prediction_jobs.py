"""Prediction jobs: a signed-in user's own sample predicted by a model set, privately.

The archive checks run on hand-made hostile archives. The jobs run on samples cut from the
shared trained survey's own bundle (tests/trained.py): in-process (eager Celery) for what a
job refuses, reports and keeps private; on real cpu and gpu workers against PostgreSQL and
Redis (module fixture ``on_workers``) for a job whose galaxies must get the same predictions
as the survey itself, and for a job whose worker is SIGKILLed while it preprocesses.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import Count
from django.test import Client
from rest_framework.test import APIClient

from catalogue.models import Galaxy, Prediction, PredictionJob, Preprocessed, Run, RunChunk, Survey
from catalogue.services import prediction_jobs as job_files
from catalogue.services.writers import CONTENT_TYPES
from pipeline.bundles import archive
from tests.bundle_helpers import ordinary_objids, sample_archive, sample_table

I_BAND_MODELS = {"gi", "gi_morph", "powerlaw_gi", "gi_images"}
COMPARED = ("ml_pred", "mstar_pred", "ml_lo68", "ml_hi68", "ml_lo95", "ml_hi95", "mstar_lo68", "mstar_hi95")


# --- the archive, alone ---------------------------------------------------------------


def hostile_tar(path: Path) -> Path:
    """A tar.gz with one good cutout and every kind of entry an archive must never unpack."""
    with tarfile.open(path, "w:gz") as out:

        def add(name: str, data: bytes = b"x", kind=tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            out.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("images/1_g.fits", b"SIMPLE")
        add("../../escaped_1_g.fits")
        add("/tmp/absolute_2_g.fits")
        add("images/3_g.fits", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("images/4_g.fits", kind=tarfile.LNKTYPE, link="images/1_g.fits")
        add("images/5_g.fits", kind=tarfile.CHRTYPE)
        add("images/6_g.fits", kind=tarfile.FIFOTYPE)
        add("notes.txt")
    return path


def test_an_archive_unpacks_only_plain_files_with_safe_names_inside_its_folder(tmp_path):
    path = hostile_tar(tmp_path / "sample.tar.gz")
    dest = tmp_path / "deep" / "er" / "dest"
    faults = archive.extract(path, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["1_g.fits"]
    by_file = {f.file: f for f in faults}
    assert by_file["../../escaped_1_g.fits"].kind == by_file["/tmp/absolute_2_g.fits"].kind == "unsafe_entry"
    assert "'..'" in by_file["../../escaped_1_g.fits"].reason and "absolute" in by_file["/tmp/absolute_2_g.fits"].reason
    assert "link" in by_file["images/3_g.fits"].reason and "link" in by_file["images/4_g.fits"].reason
    assert "device" in by_file["images/5_g.fits"].reason and "device" in by_file["images/6_g.fits"].reason
    assert by_file["notes.txt"].kind == "unknown_entry"
    # nothing anywhere but the destination
    assert not list(tmp_path.rglob("escaped_1_g.fits")) and not Path("/tmp/absolute_2_g.fits").exists()
    assert not list(tmp_path.parent.glob("escaped_1_g.fits"))


def test_archive_limits_are_read_from_the_headers_before_anything_is_unpacked(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("1_g.fits", b"\0" * 5_000_000)  # compresses to a few kB: a small bomb
    assert path.stat().st_size < 50_000
    with pytest.raises(archive.ArchiveError, match="unpacks to more than 1,000,000 bytes"):
        archive.scan(path, max_unpacked_bytes=1_000_000, max_entries=10)
    assert archive.scan(path, max_unpacked_bytes=10_000_000, max_entries=10).unpacked_bytes == 5_000_000
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(archive.ArchiveError, match="neither a zip nor a tar"):
        archive.scan(tmp_path / "not.zip", 10, 10)


# --- jobs in-process: refusals, faults, privacy ------------------------------------------


def upload(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes())


@pytest.fixture
def users(django_user_model):
    return {
        "ann": django_user_model.objects.create_user("ann", password="pw-ann-123"),
        "bob": django_user_model.objects.create_user("bob", password="pw-bob-123"),
    }


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def submit(client: APIClient, samples: list[Path], table: Path | None = None, **data):
    payload = {"sample": [upload(p) for p in samples], **data}
    if table is not None:
        payload["table"] = upload(table)
    return client.post("/api/predict/jobs/", payload, format="multipart")


@pytest.mark.django_db
def test_a_job_over_a_limit_is_refused_before_anything_is_stored(trained, users, settings, tmp_path):
    objids = ordinary_objids(trained.bundle, 12)
    sample = sample_archive(trained.bundle, objids, tmp_path / "sample.zip")
    table = sample_table(trained.bundle, objids, tmp_path / "sample.csv")
    ann = client_of(users["ann"])
    settings.PREDICTION_JOB_MAX_GALAXIES = 10
    answer = submit(ann, [sample], table)
    assert answer.status_code == 413 and "at most 10" in answer.json()["detail"], answer.content
    settings.PREDICTION_JOB_MAX_GALAXIES = 100
    settings.PREDICTION_JOB_MAX_UNPACKED_BYTES = 100_000
    answer = submit(ann, [sample], table)
    assert answer.status_code == 413 and "unpacks to more than" in answer.json()["detail"], answer.content
    settings.PREDICTION_JOB_MAX_UNPACKED_BYTES = 1 << 30
    settings.PREDICTION_JOB_MAX_UPLOAD_BYTES = 1000
    assert submit(ann, [sample], table).status_code == 413
    settings.PREDICTION_JOB_MAX_UPLOAD_BYTES = 1 << 30
    (tmp_path / "notes.txt").write_text("not an archive")
    answer = submit(ann, [tmp_path / "notes.txt"], table)
    assert (
        answer.status_code == 400
        and answer.json()["detail"] == "sample notes.txt is neither a zip nor a tar archive (gzip allowed)"
    )
    answer = submit(ann, [sample])  # no table, and no catalogue in the archive
    assert answer.status_code == 400 and "no table" in answer.json()["detail"]
    bad_columns = sample_table(trained.bundle, objids, tmp_path / "bad.csv", columns=("objid", "ra", "dec"))
    answer = submit(ann, [sample], bad_columns)
    assert answer.status_code == 400 and "lacks column(s) z, mag_g" in answer.json()["detail"]
    answer = submit(ann, [sample], table, models="no-such-set@1")
    assert answer.status_code == 400 and "no model set" in answer.json()["models"][0]
    settings.PREDICTION_JOB_MAX_RUNNING = 0
    answer = submit(ann, [sample], table)
    assert answer.status_code == 429 and "queued or running" in answer.json()["detail"]
    assert not PredictionJob.objects.exists()
    assert not (Path(settings.MEDIA_ROOT) / "jobs").exists()


@pytest.fixture
def hostile_job(trained, users, tmp_path):
    """Ann's job of 20 galaxies, 3 of them with corrupt g cutouts, 2 with bad rows, and an entry ../../x.fits."""
    objids = ordinary_objids(trained.bundle, 20, skip=60)
    corrupt = objids[:3]
    sample = sample_archive(
        trained.bundle,
        [o for o in objids if o not in corrupt],
        tmp_path / "sample.zip",
        extra={
            **{f"images/{o}_g.fits": b"SIMPLE  =                    T / not really FITS" for o in corrupt},
            "../../x.fits": b"escape",
        },
    )
    table_path = sample_table(trained.bundle, objids, tmp_path / "sample.vot")
    table = Table.read(table_path, format="votable")
    table["z"] = table["z"].astype(float)
    table["z"][3] = -1.0  # a bad row: negative redshift
    table["mag_g"][4] = np.nan  # a bad row: no magnitude
    table.write(table_path, format="votable", overwrite=True)
    before = media_files()
    answer = submit(client_of(users["ann"]), [sample], table_path)
    assert answer.status_code == 201, answer.content
    job = answer.json()
    written = media_files() - before
    return {"job": job, "objids": objids, "corrupt": corrupt, "bad_rows": objids[3:5], "users": users, "written": written}


def media_files() -> set[Path]:
    from django.conf import settings

    root = Path(settings.MEDIA_ROOT)
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.django_db
def test_a_job_with_bad_cutouts_rows_and_entries_predicts_the_rest_and_lists_each_fault(hostile_job, settings):
    job = client_of(hostile_job["users"]["ann"]).get(hostile_job["job"]["url"]).json()
    assert job["phase"] == "COMPLETED", job
    assert job["progress"] == 1.0 and all(s["status"] == "succeeded" for s in job["stages"])
    assert job["counts"] == {"galaxies": 20, "accepted": 15, "predicted": 15, "failed": 5}, job["counts"]
    faults = job["faults"]
    assert {(f["kind"], f["file"]) for f in faults if f["kind"] == "unsafe_entry"} == {("unsafe_entry", "../../x.fits")}
    bad_images = {f["objid"] for f in faults if f["kind"] == "bad_image"}
    assert bad_images == set(hostile_job["corrupt"]), faults
    assert {f["objid"] for f in faults if f["kind"] in ("negative_redshift", "missing_magnitude")} == set(hostile_job["bad_rows"])
    bad_rows = [f for f in faults if f["kind"] in ("negative_redshift", "missing_magnitude")]
    assert {(f["file"], f["row"]) for f in bad_rows} == {("sample.vot", 4), ("sample.vot", 5)}, bad_rows  # the user's names
    # nothing was written outside the job: no x.fits anywhere under the media folder, the temp folder or above
    for root in (Path(settings.MEDIA_ROOT), Path(settings.MEDIA_ROOT).parent, Path("/tmp")):
        assert not (root / "x.fits").exists()
    assert not list(Path(settings.MEDIA_ROOT).rglob("x.fits"))
    survey = f"job-{job['id']}"
    allowed = {("jobs", job["id"]), ("surveys", survey), ("arrays", survey)}  # uploads, cutouts, image stores
    written = hostile_job["written"]
    assert written and {path.parts[:2] for path in written} <= allowed, written


@pytest.mark.django_db
def test_a_jobs_results_read_back_in_every_format_with_units(hostile_job):
    ann = client_of(hostile_job["users"]["ann"])
    job = hostile_job["job"]
    tables = {}
    for fmt, url in ann.get(job["url"]).json()["results"].items():
        answer = ann.get(url, HTTP_ACCEPT=CONTENT_TYPES[fmt])  # a client that names the type it wants gets it
        assert answer.status_code == 200, (fmt, answer.content[:200])
        content = b"".join(answer.streaming_content) if answer.streaming else answer.content
        reader = {"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fits": "fits", "votable": "votable", "parquet": "parquet"}[fmt]
        tables[fmt] = Table.read(io.BytesIO(content), format=reader)
    assert set(tables) == set(job_files.RESULT_FORMATS)
    ecsv = tables["ecsv"]
    assert len(ecsv) == 20 and list(ecsv["objid"]) == sorted(hostile_job["objids"])
    assert str(ecsv["ml"].unit) == "solMass / solLum" and str(ecsv["mstar"].unit) == "solMass"
    assert str(ecsv["g_morph_ml_pred"].unit) == "solMass / solLum" and "g_morph" in ecsv["g_morph_ml_pred"].description
    status = dict(zip(ecsv["objid"].tolist(), ecsv["status"].tolist(), strict=True))
    assert {o for o, s in status.items() if s == "failed"} == set(hostile_job["corrupt"]) | set(hostile_job["bad_rows"])
    predicted = ecsv[ecsv["status"] == "predicted"]
    assert (
        len(predicted) == 15
        and np.all(np.isfinite(predicted["ml"]))
        and set(predicted["ml_model"])
        <= {"gi_images", "gi_morph", "gi", "g_morph", "g_images", "g", "powerlaw_g", "powerlaw_gi", "constant"}
    )
    # the catalogue's M/L is, per galaxy, its ml_model's own prediction
    for row in predicted:
        assert row["ml"] == pytest.approx(row[f"{row['ml_model']}_ml_pred"], rel=1e-9)
    votable = tables["votable"]
    assert str(votable["ml_lo68"].unit) == "solMass / solLum" and len(votable) == 20
    assert str(tables["fits"]["mstar_hi95"].unit) == "solMass"


@pytest.mark.django_db
def test_a_job_is_its_owners_alone_and_never_in_the_public_catalogue(hostile_job, trained):
    job = hostile_job["job"]
    bob, anonymous = client_of(hostile_job["users"]["bob"]), APIClient()
    results = job["results"]["csv"]
    assert bob.get(job["url"]).status_code == bob.get(results).status_code == 404
    assert bob.delete(job["url"]).status_code == 404 and PredictionJob.objects.filter(pk=job["id"]).exists()
    assert bob.get("/api/predict/jobs/").json() == []
    assert anonymous.get(job["url"]).status_code == anonymous.get(results).status_code == 401
    assert anonymous.get("/api/predict/jobs/").status_code == 401
    survey = Survey.objects.get(name=f"job-{job['id']}")
    mine = Galaxy.objects.filter(survey=survey).exclude(status="rejected")
    assert survey.is_private and mine.count() == 15 and Prediction.objects.filter(galaxy__in=mine).exists()
    one = mine.first()
    public = APIClient()
    names = [s["name"] for s in public.get("/api/surveys/").json()["results"]]
    assert survey.name not in names and trained.survey.name in names
    listed, url = [], "/api/galaxies/?page_size=1000"
    while url:
        page = public.get(url).json()
        listed += page["results"]
        url = page["next"]
    assert len(listed) == Galaxy.objects.exclude(survey=survey).count() and survey.name not in {g["survey"] for g in listed}
    assert public.get(f"/api/galaxies/{one.pk}/").status_code == 404
    # by name, the job's survey is as unknown as one that does not exist: no rows
    assert public.get("/api/galaxies/", {"survey": survey.name}).json()["results"] == []
    assert public.get("/api/galaxies/", {"survey": "no-such-survey"}).json()["results"] == []
    counted = {m["id"]: m["n_predictions"] for m in public.get("/api/models/", {"page_size": 100}).json()["results"]}
    for model_id, n in Prediction.objects.exclude(galaxy__survey=survey).values_list("model").annotate(n=Count("pk")):
        assert counted[model_id] == n  # a model's count of predictions leaves the job's out
    assert Client().get(f"/surveys/{survey.name}/").status_code == 404
    assert Client().get(f"/galaxies/{one.pk}/").status_code == 404
    assert survey.name not in Client().get("/catalogue/").content.decode()
    # the cone search around the job's galaxy finds the survey's own galaxy at that place, never the job's
    cone = Client().get("/scs/", {"RA": one.ra, "DEC": one.dec, "SR": 0.01}).content.decode()
    assert trained.survey.name in cone and survey.name not in cone
    # TAP: every table that carries galaxies, surveys or predictions; the same queries find them once the survey is
    # made public for a moment (so the queries do see the job's rows, and the views are what hides them)
    queries = (
        f"SELECT COUNT(*) AS n FROM morphomass.galaxies WHERE survey = '{survey.name}'",
        f"SELECT COUNT(*) AS n FROM morphomass.catalogue WHERE survey_id = {survey.pk}",
        f"SELECT COUNT(*) AS n FROM morphomass.surveys WHERE survey_id = {survey.pk}",
        f"SELECT COUNT(*) AS n FROM morphomass.predictions WHERE galaxy_id = {one.pk}",
    )
    if connection.vendor == "postgresql":  # TAP runs on PostgreSQL only
        assert [tap_count(q) for q in queries] == [0, 0, 0, 0]
        owner = survey.owner
        Survey.objects.filter(pk=survey.pk).update(owner=None)
        assert all(tap_count(q) > 0 for q in queries)
        Survey.objects.filter(pk=survey.pk).update(owner=owner)
    # the owner removes it: the job, its survey and its files go
    ann = client_of(hostile_job["users"]["ann"])
    files = job_files.storage_files(PredictionJob.objects.get(pk=job["id"]))
    assert ann.delete(job["url"]).status_code == 204
    assert not PredictionJob.objects.filter(pk=job["id"]).exists() and not Survey.objects.filter(pk=survey.pk).exists()
    from django.core.files.storage import default_storage

    assert files and not any(default_storage.exists(name) for name in files)


def tap_count(query: str) -> int:
    answer = Client().get("/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "FORMAT": "csv"})
    assert answer.status_code == 200, (query, answer)
    header, value = b"".join(answer.streaming_content).decode().split()
    return int(value)


@pytest.mark.django_db
def test_a_g_only_sample_gets_the_g_models_and_says_the_i_models_were_skipped(trained, users, tmp_path):
    objids = ordinary_objids(trained.bundle, 15, skip=90)
    sample = sample_archive(trained.bundle, objids, tmp_path / "g.tar.gz", bands="g")
    table = sample_table(trained.bundle, objids, tmp_path / "g.csv", columns=("objid", "z", "mag_g"))
    answer = submit(client_of(users["ann"]), [sample], table)
    assert answer.status_code == 201, answer.content
    job = answer.json()
    assert job["phase"] == "COMPLETED" and job["counts"]["predicted"] == 15, job
    assert set(job["models_skipped"]) == I_BAND_MODELS, job["models_skipped"]
    survey = Survey.objects.get(name=f"job-{job['id']}")
    models = set(Prediction.objects.filter(galaxy__survey=survey).values_list("model__name", flat=True))
    assert models and not models & I_BAND_MODELS


@pytest.mark.django_db
def test_expired_jobs_are_deleted_with_their_galaxies(hostile_job):
    from datetime import timedelta

    from django.utils import timezone

    job = PredictionJob.objects.get(pk=hostile_job["job"]["id"])
    survey_id = job.survey_id
    PredictionJob.objects.filter(pk=job.pk).update(destruction=timezone.now() - timedelta(seconds=1))
    assert job_files.purge_expired() == 1
    assert not PredictionJob.objects.exists() and not Survey.objects.filter(pk=survey_id).exists()


# --- real workers ------------------------------------------------------------------------


def wait_for_job(job_id, timeout: float) -> PredictionJob:
    from catalogue.orchestration.prediction_jobs import refresh

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = refresh(PredictionJob.objects.get(pk=job_id))
        if job.phase not in PredictionJob.ACTIVE:
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish within {timeout:.0f} s: {job.phase}, {job.message}")


@pytest.fixture(scope="module")
def on_workers(request, django_db_setup, django_db_blocker, synthetic_bundle, tmp_path_factory):  # noqa: ARG001 - ordering
    """Two jobs on real workers: 50 galaxies of the trained survey's own bundle (then compared with the survey), and
    50 more whose cpu worker is SIGKILLed mid-preprocess and replaced."""
    from django.conf import settings
    from django.contrib.auth.models import User

    from catalogue.celery import app
    from tests.conftest import REDIS_URL, ROOT, WorkerProcess, _test_database_url, shared_trained_survey
    from tests.run_helpers import FAST_REDELIVERY, running_chunk, wait_for

    trained = shared_trained_survey(request.config, django_db_blocker, synthetic_bundle, tmp_path_factory)
    tmp = tmp_path_factory.mktemp("jobs")
    old_media, settings.MEDIA_ROOT = settings.MEDIA_ROOT, trained.media
    env = {
        **__import__("os").environ,
        **FAST_REDELIVERY,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "PYTHONPATH": str(ROOT),
        "MEDIA_ROOT": str(trained.media),
        "DATABASE_URL": _test_database_url(),
    }
    app.conf.task_always_eager = False
    app.control.purge()
    workers: list[WorkerProcess] = []
    try:
        with django_db_blocker.unblock():
            user = User.objects.create_user("worker-ann", password="pw-worker-ann")
            client = client_of(user)
            workers += [WorkerProcess(app, "cpu", env).start(), WorkerProcess(app, "gpu", env).start()]
            same = ordinary_objids(trained.bundle, 50)
            archive_path = sample_archive(trained.bundle, same, tmp / "same.zip")
            model_set = trained.model_set.name
            answer = submit(client, [archive_path], sample_table(trained.bundle, same, tmp / "same.fits"), models=model_set)
            assert answer.status_code == 201, answer.content
            same_job = wait_for_job(answer.json()["id"], 240)

            # the second: a cpu worker that dawdles over each galaxy, killed while it preprocesses
            workers[0].stop()
            slow = WorkerProcess(app, "cpu", {**env, "MORPHOMASS_FAULTS": json.dumps({"delay_s": 0.15})}).start()
            workers.append(slow)
            killed = ordinary_objids(trained.bundle, 50, skip=50)
            answer = submit(
                client,
                [sample_archive(trained.bundle, killed, tmp / "killed.tar.gz")],
                sample_table(trained.bundle, killed, tmp / "killed.csv"),
                models=model_set,
            )
            assert answer.status_code == 201, answer.content
            killed_id = answer.json()["id"]

            def preprocessing() -> RunChunk | None:
                job = PredictionJob.objects.get(pk=killed_id)
                run = Run.objects.filter(parent_id=job.workflow_id, stage="preprocess").first() if job.workflow_id else None
                return running_chunk(run) if run is not None else None

            wait_for(preprocessing, 120, "the killed job's preprocessing to be under way")
            time.sleep(1.0)  # a few galaxies into the chunk
            slow.kill()
            workers.append(WorkerProcess(app, "cpu", env).start())
            killed_job = wait_for_job(killed_id, 240)
            yield {"trained": trained, "same": same_job, "same_objids": same, "killed": killed_job, "user": user}
            for job in PredictionJob.objects.filter(owner=user):
                job_files.delete(job)
            user.delete()
    finally:
        for worker in workers:
            worker.stop()
        app.control.purge()
        app.conf.task_always_eager = True
        settings.MEDIA_ROOT = old_media


@pytest.mark.services
@pytest.mark.django_db
def test_a_job_of_the_trained_bundle_gets_the_predictions_applying_the_set_gives(on_workers, trained):  # noqa: ARG001
    job = on_workers["same"]
    assert job.phase == "COMPLETED", (job.error, job.message)
    assert job.model_set == trained.model_set
    own = {
        (p.galaxy.objid, p.model.name): p
        for p in Prediction.objects.filter(galaxy__survey=trained.survey, galaxy__objid__in=on_workers["same_objids"])
        .filter(model__model_set=job.model_set)
        .select_related("galaxy", "model")
    }
    theirs = {
        (p.galaxy.objid, p.model.name): p
        for p in Prediction.objects.filter(galaxy__survey=job.survey).select_related("galaxy", "model")
    }
    assert len(theirs) == len(own) >= 50 * 5 and set(theirs) == set(own)
    for key, mine in own.items():
        for name in COMPARED:
            a, b = getattr(mine, name), getattr(theirs[key], name)
            assert (a is None and b is None) or b == pytest.approx(a, rel=1e-6), (key, name)
        assert theirs[key].support_reasons == mine.support_reasons, key


@pytest.mark.services
@pytest.mark.django_db
def test_a_job_whose_worker_is_killed_mid_preprocess_completes_with_every_galaxy_once(on_workers, trained):  # noqa: ARG001
    job = on_workers["killed"]
    assert job.phase == "COMPLETED", (job.error, job.message)
    preprocess = Run.objects.get(parent=job.workflow, stage="preprocess")
    chunks = list(RunChunk.objects.filter(run=preprocess))
    items = [i for c in chunks for i in c.items]
    assert len(items) == len(set(items)) == 50 == preprocess.items_done + preprocess.items_failed
    assert any(c.attempts >= 2 for c in chunks), [(c.index, c.attempts) for c in chunks]  # the killed chunk came back
    assert Preprocessed.objects.filter(galaxy__survey=job.survey).count() == 50
    per_model = Prediction.objects.filter(galaxy__survey=job.survey).values_list("model__name", "galaxy_id")
    assert len(per_model) == len(set(per_model)) and len({g for _, g in per_model}) == 50


@pytest.mark.django_db
def test_a_queued_job_is_cancelled_then_removed_and_a_lost_one_is_sent_again_by_the_reaper(
    trained,
    users,
    tmp_path,
    deferred,  # noqa: ARG001 - deferred holds the messages back
):
    from datetime import timedelta

    from django.utils import timezone

    from catalogue.celery import app
    from catalogue.orchestration import prediction_jobs as flow

    objids = ordinary_objids(trained.bundle, 8, skip=120)
    sample = sample_archive(trained.bundle, objids, tmp_path / "s.zip")
    table = sample_table(trained.bundle, objids, tmp_path / "s.csv")
    ann = client_of(users["ann"])
    first, lost = submit(ann, [sample], table).json(), submit(ann, [sample], table).json()
    assert first["phase"] == lost["phase"] == "QUEUED" and first["progress"] == 0.0
    # DELETE on a queued job cancels it; its preparation, when it comes, does nothing; a second DELETE removes it
    cancelled = ann.delete(first["url"])
    assert cancelled.status_code == 200 and cancelled.json()["phase"] == "ABORTED"
    assert flow.prepare(first["id"]) == "ABORTED" and PredictionJob.objects.get(pk=first["id"]).survey is None
    assert ann.delete(first["url"]).status_code == 204 and not PredictionJob.objects.filter(pk=first["id"]).exists()
    assert [j["id"] for j in ann.get("/api/predict/jobs/").json()] == [lost["id"]]
    # the other's message never reached a worker: a minute on, the reaper sends it again and it runs
    assert flow.reap(now=timezone.now())["sent_again"] == 0
    app.conf.task_always_eager = True
    assert flow.reap(now=timezone.now() + timedelta(minutes=2))["sent_again"] == 1
    job = ann.get(lost["url"]).json()
    assert job["phase"] == "COMPLETED" and job["counts"]["predicted"] == 8, job


@pytest.mark.django_db
def test_a_bundle_archive_needs_no_table_and_loose_fits_files_make_a_sample_too(trained, users, tmp_path):
    import shutil

    ann = client_of(users["ann"])
    objids = ordinary_objids(trained.bundle, 6, skip=140)
    # a bundle as ingest_survey reads it (catalogue.csv and images/), one folder down in a tar.gz, no table part
    bundle = tmp_path / "my-bundle"
    (bundle / "images").mkdir(parents=True)
    sample_table(trained.bundle, objids, bundle / "catalogue.csv", columns=("objid", "ra", "dec", "z", "d25_arcmin", "mag_g"))
    for objid in objids:
        shutil.copy(trained.bundle / "images" / f"{objid}_g.fits", bundle / "images")
    packed = tmp_path / "bundle.tar.gz"
    with tarfile.open(packed, "w:gz") as out:
        out.add(bundle, "my-bundle")
    job = submit(ann, [packed]).json()
    assert job["phase"] == "COMPLETED" and job["counts"] == {"galaxies": 6, "accepted": 6, "predicted": 6, "failed": 0}, job
    # the cutouts themselves, one part each, and a table (FITS this time)
    loose = [trained.bundle / "images" / f"{objid}_g.fits" for objid in objids[:4]]
    table = sample_table(trained.bundle, objids[:4], tmp_path / "four.fits", columns=("objid", "z", "mag_g"))
    table = table.rename(tmp_path / "four.fit")  # FITS by its other ending
    job = submit(ann, [*loose, loose[0]], table).json()
    assert job["phase"] == "COMPLETED" and job["counts"]["predicted"] == 4, job
    assert [f["kind"] for f in job["faults"]] == ["duplicate_entry"], job["faults"]


@pytest.mark.django_db
def test_a_preparation_redone_after_its_worker_was_lost_takes_up_the_stages_it_had_started(trained, users, tmp_path, deferred):  # noqa: ARG001
    from datetime import timedelta

    from django.utils import timezone

    from catalogue.orchestration import prediction_jobs as flow

    objids = ordinary_objids(trained.bundle, 5, skip=150)
    job = submit(
        client_of(users["ann"]),
        [sample_archive(trained.bundle, objids, tmp_path / "s.zip")],
        sample_table(trained.bundle, objids, tmp_path / "s.csv"),
    ).json()
    assert flow.prepare(job["id"]) == "EXECUTING"  # deferred: the stages are started, their chunks not sent
    first = PredictionJob.objects.get(pk=job["id"])
    # the worker died after it started the stages but before it recorded them: the job looks like a silent preparation
    PredictionJob.objects.filter(pk=first.pk).update(workflow=None, heartbeat=timezone.now() - timedelta(minutes=10))
    assert flow.prepare(job["id"]) == "EXECUTING"
    again = PredictionJob.objects.get(pk=first.pk)
    assert again.workflow_id == first.workflow_id and again.error == ""
    assert Run.objects.filter(survey=again.survey, stage="workflow").count() == 1
