"""Object storage (MORPHOMASS_STORAGE=s3): the settings, names never overwritten, and the image store in
shards read by byte ranges and rewritten under a lock, against a real S3 server (moto's) over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections, transaction

from catalogue.models import Galaxy, ImageStore, Survey
from catalogue.services import faults, image_shards, object_store
from catalogue.services.image_store import allocate_rows, get_or_create_store, read_rows, staged_reader, write_images
from tests.s3_server import S3Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, settings) -> str:
    """A new bucket as the default storage of this test."""
    name = s3_server.bucket()
    settings.STORAGES = s3_server.storages_setting(name)
    assert not object_store.has_local_paths()
    return name


def _survey(name: str, n: int) -> tuple[Survey, list[int]]:
    survey = Survey.objects.create(name=name)
    Galaxy.objects.bulk_create([Galaxy(survey=survey, objid=i, ra=10.0, dec=0.0, z=0.05) for i in range(n)])
    return survey, list(Galaxy.objects.filter(survey=survey).order_by("id").values_list("id", flat=True))


def _settings_error(env: dict) -> str:
    code = "import django; django.setup()"
    reply = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "catalogue.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reply.returncode != 0
    return reply.stderr.strip().splitlines()[-1]


def test_the_storage_setting_names_what_is_wrong():
    assert "MORPHOMASS_STORAGE='ftp': use 'local' (MEDIA_ROOT) or 's3'" in _settings_error({"MORPHOMASS_STORAGE": "ftp"})
    missing = _settings_error({"MORPHOMASS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": ""})
    assert "MORPHOMASS_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME" in missing


def test_the_s3_setting_gives_the_s3_storage_that_never_overwrites_a_name(s3_server):
    """The environment alone, as on a worker machine: the bucket is the storage, a taken name gets a new suffix."""
    bucket = s3_server.bucket()
    code = (
        "import django; django.setup()\n"
        "from django.core.files.base import ContentFile\n"
        "from django.core.files.storage import default_storage as s\n"
        "a = s.save('jobs/1/result.csv', ContentFile(b'first'))\n"
        "b = s.save('jobs/1/result.csv', ContentFile(b'second'))\n"
        "print(type(s._wrapped).__name__, a, b, s.open(a).read().decode(), s.open(b).read().decode())\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "catalogue.settings", **s3_server.environment(bucket)}
    reply = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert reply.returncode == 0, reply.stderr[-2000:]
    kind, first, second, first_text, second_text = reply.stdout.split()
    assert kind == "S3Storage" and first == "jobs/1/result.csv" and second != first and second.startswith("jobs/1/result")
    assert (first_text, second_text) == ("first", "second")
    assert s3_server.keys(bucket) == sorted([first, second])


@pytest.mark.django_db(transaction=True)
def test_the_image_store_on_s3_keeps_rows_in_shards_read_by_ranges_and_deleted_with_the_survey(bucket, s3_server):
    survey, ids = _survey("sharded", 150)
    store = get_or_create_store(survey, 16)
    with transaction.atomic():
        rows = allocate_rows(store, ids)
    store.refresh_from_db()
    images = np.random.default_rng(1).random((150, 16, 16)).astype(np.float16)
    order = np.random.default_rng(2).permutation(150)  # any order, in two writes
    for part in (order[:70], order[70:]):
        write_images(store, np.array([rows[ids[i]] for i in part]), images[part])
    names = [f"{store.images_name}.shards/{k:08d}" for k in range(3)] + [f"{store.ids_name}.shards/{k:08d}" for k in range(3)]
    assert s3_server.keys(bucket) == sorted(names)  # 150 rows: three shards of 64, nothing else
    asked = np.array([rows[ids[i]] for i in (149, 3, 64, 3, 100)])
    assert np.array_equal(read_rows(store, asked), images[[149, 3, 64, 3, 100]].astype(np.float32))
    assert np.array_equal(read_rows(store, np.array([rows[ids[7]]]))[0], images[7].astype(np.float32))  # a preview
    stored_ids = image_shards.read_rows(store.ids_name, np.arange(150), np.dtype("<i8"), ())
    assert stored_ids.tolist() == ids  # the galaxy ids beside the images, as in the local file
    every = np.array([rows[g] for g in ids])
    reader, positions = staged_reader([store], every[::-1].reshape(-1, 1))  # training: fetched once, then local
    assert np.array_equal(reader(positions[:5]), images[::-1][:5].astype(np.float32))
    with pytest.raises(NotImplementedError):
        default_storage.path(store.images_name)
    survey.delete()
    assert s3_server.keys(bucket) == []  # the store's shards went with its survey


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("bucket")
def test_two_workers_writing_neighbouring_rows_of_one_shard_at_once_lose_nothing(monkeypatch):
    """Each holds the shard between reading it and writing it back (half a second): without the lock
    per shard, the second to write back would drop the first's rows."""
    survey, ids = _survey("neighbours", 40)
    store = get_or_create_store(survey, 12)
    with transaction.atomic():
        rows = allocate_rows(store, ids)
    store = ImageStore.objects.get(pk=store.pk)
    monkeypatch.setenv("MORPHOMASS_FAULTS", json.dumps({"shard_rewrite_pause_s": 0.5}))
    faults._faults.cache_clear()
    images = {g: np.full((12, 12), k + 1, dtype=np.float16) for k, g in enumerate(ids)}
    halves = [ids[:20], ids[20:]]  # rows 0-19 and 20-39: one shard (64 rows)
    assert {rows[g] // image_shards.SHARD_ROWS for g in ids} == {0}
    start, errors = threading.Barrier(2), []

    def worker(galaxies: list[int]) -> None:
        try:
            start.wait()
            write_images(store, np.array([rows[g] for g in galaxies]), np.stack([images[g] for g in galaxies]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker, args=(half,)) for half in halves]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        monkeypatch.delenv("MORPHOMASS_FAULTS")
        faults._faults.cache_clear()
    assert not errors
    back = read_rows(store, np.array([rows[g] for g in ids]))
    lost = [k for k, g in enumerate(ids) if not np.array_equal(back[k], images[g].astype(np.float32))]
    assert lost == []


@pytest.mark.usefixtures("bucket")
def test_a_taken_name_gets_a_new_one_on_s3_in_process_too():
    first = default_storage.save("models/run-1/g_morph.pkl", ContentFile(b"one"))
    second = default_storage.save("models/run-1/g_morph.pkl", ContentFile(b"two"))
    assert first != second and default_storage.open(first).read() == b"one"


@pytest.mark.django_db
@pytest.mark.usefixtures("bucket")
def test_a_cutout_on_s3_is_downloaded_from_the_bucket_not_through_the_web_process(client):
    """The page redirects to a signed link of the object, named as the download; the link serves the file."""
    import requests

    from catalogue.models import Image

    survey, ids = _survey("linked", 1)
    name = default_storage.save("surveys/linked/images/0_g.fits", ContentFile(b"SIMPLE  =                    T"))
    Image.objects.create(galaxy_id=ids[0], band="g", file=name)
    reply = client.get(f"/galaxies/{ids[0]}/g.fits")
    assert reply.status_code == 302 and "Signature=" in reply["Location"]  # signed: the bucket stays private
    fetched = requests.get(reply["Location"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == b"SIMPLE  =                    T"
    assert fetched.headers["Content-Type"] == "application/fits"
    assert "linked_0_g.fits" in fetched.headers["Content-Disposition"]
    assert client.get(f"/galaxies/{ids[0]}/i.fits").status_code == 404
    # the API's detail links the app's download, not the storage's (expiring, or /media/ that nothing serves)
    detail = client.get(f"/api/galaxies/0/?survey={survey.name}").json()
    assert detail["images"]["fits"] == {"g": f"http://testserver/galaxies/{ids[0]}/g.fits"}


@pytest.mark.django_db
def test_storage_ready_creates_the_missing_bucket_and_proves_it_can_write(s3_server, settings):
    from io import StringIO

    from django.core.management import call_command

    name = f"fresh-{os.getpid()}"
    settings.STORAGES = s3_server.storages_setting(name)  # a bucket nobody made yet, as MinIO starts
    out = StringIO()
    call_command("storage_ready", stdout=out)
    assert f"storage ready: S3 bucket {name}" in out.getvalue() and "(created)" in out.getvalue()
    call_command("storage_ready", stdout=(again := StringIO()))
    assert "(created)" not in again.getvalue() and s3_server.keys(name) == []  # its probe file is gone


@pytest.mark.django_db
@pytest.mark.usefixtures("bucket")
def test_links_are_signed_for_the_address_clients_reach_the_bucket_at(client, s3_server, settings):
    """Inside, the workers reach MinIO as http://minio:9000; a browser needs the address outside."""
    import requests

    from catalogue.models import Image

    settings.AWS_S3_PUBLIC_ENDPOINT_URL = s3_server.endpoint.replace("127.0.0.1", "localhost")
    survey, ids = _survey("outside", 1)
    name = default_storage.save("surveys/outside/images/0_g.fits", ContentFile(b"FITS"))
    Image.objects.create(galaxy_id=ids[0], band="g", file=name)
    link = client.get(f"/galaxies/{ids[0]}/g.fits")["Location"]
    assert link.startswith(settings.AWS_S3_PUBLIC_ENDPOINT_URL + "/")
    assert requests.get(link, timeout=30).content == b"FITS"


@pytest.mark.django_db(transaction=True)
def test_a_deleted_survey_leaves_no_cutout_or_model_file_in_the_bucket(bucket, s3_server):
    from django.db.models.signals import post_delete, pre_delete

    from catalogue.models import Image, TrainedModel

    survey, ids = _survey("gone", 2)
    for k, galaxy_id in enumerate(ids):
        name = default_storage.save(f"surveys/gone/images/{k}_g.fits", ContentFile(b"FITS"))
        Image.objects.create(galaxy_id=galaxy_id, band="g", file=name)
    model = TrainedModel.objects.create(kind="gbm", name="g_morph", survey=survey)
    model.artifact.save("run-1/g_morph.pkl", ContentFile(b"model"))
    kept = default_storage.save("surveys/other/images/9_g.fits", ContentFile(b"another survey's"))
    assert len(s3_server.keys(bucket)) == 4
    survey.delete()
    assert s3_server.keys(bucket) == [kept]  # its files went with it, nobody else's
    # gathered per survey, not per image: Django deletes a survey's images with one DELETE only while
    # no handler listens to an Image's deletion (else it loads every image of the survey first)
    assert not pre_delete.has_listeners(Image) and not post_delete.has_listeners(Image)
