"""The preprocessing task over an ingested synthetic survey: results stored, failures recorded."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from catalogue.models import Galaxy, Image, ImageStore, Preprocessed, Run, StoredImage, Survey
from catalogue.orchestration.stage import start_stage
from catalogue.services.image_store import load_log_images, stored_resolutions
from catalogue.services.ingest import ingest_bundle
from catalogue.tasks import start_stage_task
from pipeline import presets
from pipeline.images.preprocess import FEATURE_NAMES

pytestmark = pytest.mark.django_db


@pytest.fixture
def survey(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "pre")
    return Survey.objects.get(name="pre")


def blank_objid(truth) -> int:
    return int(next(o for o, f in zip(truth["objid"], truth["fault"], strict=True) if f == "blank_image"))


def test_task_preprocesses_every_galaxy_and_records_failures(survey, synthetic_truth):
    result = start_stage_task.delay("preprocess", "pre", preset="test", resolutions=[32, 69])
    run = Run.objects.get(pk=result.get())
    assert run.celery_task_id == result.id
    candidates = Galaxy.objects.filter(survey=survey).exclude(status="rejected")
    assert run.status == "succeeded" and run.progress == 1.0
    assert run.items_total == candidates.count()
    assert run.items_done + run.items_failed == run.items_total
    blank = blank_objid(synthetic_truth)
    # The blank image fails; so may a rare diffuse galaxy whose noise level has no scaling value.
    assert 1 <= run.items_failed <= 0.03 * run.items_total
    failures = {f["objid"]: f["reason"] for f in run.result["failures"]}
    assert blank in failures and len(failures) == run.items_failed
    assert all("constant" in r or "NoScalingValue" in r for r in failures.values())
    failed = Preprocessed.objects.get(galaxy__objid=blank)
    assert failed.status == "failed" and "constant" in failed.error
    done = Preprocessed.objects.filter(run=run, status="ok").select_related("galaxy")
    assert done.count() == run.items_done
    row = done.first()
    assert set(row.features) == set(FEATURE_NAMES)
    assert row.features["redshift"] == pytest.approx(row.galaxy.z)
    assert 0.05 < row.features["pixel_kpc"] < 3
    assert row.scaling_value > 0 and 0 < row.noise_level < 0.2
    assert stored_resolutions(row.galaxy) == [32, 69]
    galaxies = list(Galaxy.objects.filter(preprocessed__run=run, preprocessed__status="ok").select_related("preprocessed")[:40])
    images = load_log_images(galaxies, 69)
    assert images.shape == (len(galaxies), 69, 69)
    assert images.min() >= 0 and images.max() <= 1.001
    assert np.all(images.reshape(len(galaxies), -1).std(axis=1) > 0.01)  # real images, not blanks
    # Luminosity sum tracks the catalogue luminosity (stars removed, sky noise averages out).
    ratio = np.array([g.preprocessed.features["lum_sum"] / g.lum_g for g in galaxies])
    assert 0.6 < np.median(ratio) < 1.3


def test_stars_from_the_catalogue_prior_are_removed(survey):
    start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    with_stars = Preprocessed.objects.filter(galaxy__survey=survey, status="ok", n_stars_removed__gt=0)
    listed = [p for p in Preprocessed.objects.filter(galaxy__survey=survey, status="ok") if p.galaxy.extra.get("stars")]
    assert listed and with_stars.count() >= 0.6 * len(listed)
    removed_without_prior = Preprocessed.objects.filter(
        galaxy__survey=survey, n_stars_removed__gt=0, galaxy__extra__stars__isnull=True
    )
    assert not removed_without_prior.exists()


def test_rerun_retries_failures_and_adds_missing_resolutions(survey):
    first = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    again = start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    assert first.items_failed >= 1
    assert again.items_total == first.items_failed  # only failed galaxies are retried
    store = ImageStore.objects.get(survey=survey, resolution=32, channel="g")
    rows_before = dict(StoredImage.objects.filter(store=store).values_list("galaxy_id", "row"))
    before = load_log_images(list(Galaxy.objects.filter(preprocessed__status="ok").order_by("id")[:5]), 32)
    # A new resolution makes every galaxy due again, and both resolutions end up stored.
    wider = start_stage("preprocess", survey, resolutions=[32, 48], preset_name="test")
    assert wider.items_total == first.items_total
    ok = list(Galaxy.objects.filter(survey=survey, preprocessed__status="ok").order_by("id"))
    assert all(stored_resolutions(g) == [32, 48] for g in ok[:20])
    assert load_log_images(ok, 48).shape == (len(ok), 48, 48)
    # Galaxies keep their rows: a re-run overwrites in place, nothing is left to reclaim.
    assert dict(StoredImage.objects.filter(store=store).values_list("galaxy_id", "row")) == rows_before
    np.testing.assert_array_equal(load_log_images(ok[:5], 32), before)
    forced = start_stage("preprocess", survey, resolutions=[32], preset_name="test", force=True)
    assert forced.items_total == first.items_total
    assert Preprocessed.objects.filter(run=forced).count() == first.items_total


def test_i_images_and_colour_maps_are_stored_beside_the_g_images(survey, monkeypatch):
    """The test preset's image_bands (g, i): each galaxy with an i cutout gets its i image and
    g - i map at every resolution; one whose i cutout is gone keeps its g image alone."""
    no_i = Galaxy.objects.filter(survey=survey, status="ok").order_by("objid").first()
    Image.objects.filter(galaxy=no_i, band="i").delete()
    first = start_stage("preprocess", survey, resolutions=[48], preset_name="test")
    assert first.config["image_bands"] == ["g", "i"]
    ok = list(Galaxy.objects.filter(survey=survey, preprocessed__status="ok").select_related("preprocessed").order_by("id"))
    coloured = [g for g in ok if g.preprocessed.i_band == "ok"]
    assert len(coloured) >= 0.95 * (len(ok) - 1) and no_i not in coloured
    reasons = {g.preprocessed.i_band for g in ok} - {"ok", ""}
    assert all(r.startswith(("NoScalingValue: ", "ValueError: ")) for r in reasons), reasons
    assert all(g.preprocessed.i_scaling_value > 0 for g in coloured)
    i_images = load_log_images(coloured, 48, channel="i")
    assert i_images.shape == (len(coloured), 48, 48) and i_images.min() >= 0 and i_images.max() <= 1.001
    # The map's colour at the centre follows each galaxy's catalogue g - i (AB mag).
    maps = load_log_images(coloured, 48, channel="g-i")
    centre = np.array([np.nanmedian(m[20:28, 20:28]) for m in maps])
    catalogue = np.array([g.mag_g - g.mag_i for g in coloured])
    assert np.isfinite(centre).mean() > 0.95
    both = np.isfinite(centre)
    assert np.median(np.abs(centre[both] - catalogue[both])) < 0.3
    assert np.corrcoef(centre[both], catalogue[both])[0, 1] > 0.5
    assert np.isnan(maps).any(), "the sky around a galaxy has no colour"
    # The galaxy without an i cutout: its g image, no i channel, and a clear error when one is asked for.
    assert no_i.preprocessed.status == "ok" and no_i.preprocessed.i_band == "" and stored_resolutions(no_i) == [48]
    with pytest.raises(LookupError, match=r"no 48 px log-scaled i images"):
        load_log_images([no_i, coloured[0]], 48, channel="i")
    # Nothing is due again: every i cutout was tried.
    again = start_stage("preprocess", survey, resolutions=[48], preset_name="test")
    assert again.items_total == first.items_failed
    # A later run for g alone (a preset without i, a new size) leaves the i channels as they were.
    from catalogue.stages import preprocess

    g_preset = {**presets.preset("fast"), "image_bands": ("g",)}
    monkeypatch.setattr(preprocess, "preset", lambda name: dict(g_preset) if name == "fast" else presets.preset(name))
    g_only = start_stage("preprocess", survey, resolutions=[48, 56], preset_name="fast")
    assert g_only.config["image_bands"] == ["g"] and g_only.items_total == first.items_total
    assert Preprocessed.objects.filter(galaxy__in=coloured, i_band="ok").count() == len(coloured)
    np.testing.assert_array_equal(load_log_images(coloured, 48, channel="g-i"), maps)


@pytest.mark.django_db(transaction=True)
def test_deleting_a_survey_removes_its_image_store_files(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "gone")
    survey = Survey.objects.get(name="gone")
    start_stage("preprocess", survey, resolutions=[32], preset_name="test")
    names = [n for s in ImageStore.objects.filter(survey=survey) for n in (s.images_name, s.ids_name)]
    assert names and all(default_storage.exists(n) for n in names)
    survey.delete()
    assert not ImageStore.objects.exists() and not any(default_storage.exists(n) for n in names)


def test_fast_then_paper_preprocessing_gives_every_resolution(survey):
    fast = start_stage("preprocess", survey, preset_name="fast")
    paper = start_stage("preprocess", survey, preset_name="paper")
    assert fast.resolutions == [48, 69] and paper.resolutions == [69, 128, 197]
    assert paper.items_total == fast.items_total  # nobody had 128 or 197 px yet
    ok = list(Galaxy.objects.filter(survey=survey, preprocessed__status="ok"))
    assert len(ok) == fast.items_done
    for resolution in (48, 69, 128, 197):
        images = load_log_images(ok, resolution)
        assert images.shape == (len(ok), resolution, resolution)
        assert np.all(images.reshape(len(ok), -1).std(axis=1) > 0.01)


@pytest.mark.usefixtures("survey")
def test_run_pipeline_prints_a_json_summary(capsys):
    call_command("run_pipeline", "--survey", "pre", "--preset", "test", "--stages", "preprocess", "--json")
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    stage = summary["stages"]["preprocess"]
    assert stage["status"] == "succeeded" and stage["failed"] >= 1
    assert stage["done"] == Preprocessed.objects.filter(status="ok").count()
    assert stage["failures"][0]["reason"]


def test_run_pipeline_rejects_unknown_survey_and_stage(survey):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="no survey"):
        call_command("run_pipeline", "--survey", "nope")
    with pytest.raises(CommandError, match="unknown stage"):
        call_command("run_pipeline", "--survey", survey.name, "--stages", "preprocess,dance")


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_workers")
def test_preprocessing_runs_on_a_real_worker(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "worker")
    survey = Survey.objects.get(name="worker")
    run = start_stage("preprocess", survey, resolutions=[32], preset_name="test", chunk_size=60)
    deadline = time.monotonic() + 240
    while run.status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        run.refresh_from_db()
    assert run.status == "succeeded", run.message
    assert run.items_done == Preprocessed.objects.filter(run=run, status="ok").count() > 100
    assert run.items_failed >= 1


def test_galaxy_page_shows_every_stage_with_units(survey, client):
    start_stage("preprocess", survey, resolutions=[32, 69], preset_name="test")
    galaxy = Galaxy.objects.filter(survey=survey, preprocessed__status="ok").first()
    page = client.get(f"/galaxies/{galaxy.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert str(galaxy.objid) in html and "solLum/pix" in html and "scaling_value" in html
    assert f"/galaxies/{galaxy.pk}/g.png" in html and f"/galaxies/{galaxy.pk}/log69.png" in html
    for stage in ("g", "log32", "log69"):
        png = client.get(f"/galaxies/{galaxy.pk}/{stage}.png")
        assert png.status_code == 200 and png["Content-Type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/galaxies/{galaxy.pk}/log197.png").status_code == 404
    failed = Galaxy.objects.get(preprocessed__status="failed", preprocessed__error__contains="constant")
    assert "Preprocessing failed" in client.get(f"/galaxies/{failed.pk}/").content.decode()


def test_staff_start_preprocessing_from_the_admin(survey, admin_client):
    response = admin_client.post(
        "/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["preprocess"], "preset": "fast"}, follow=True
    )
    assert response.status_code == 200
    run = Run.objects.get(stage="preprocess", survey=survey)
    assert run.started_by.is_staff and run.status == "succeeded"
    assert f"run #{run.pk}" in response.content.decode()
    assert admin_client.get(f"/admin/catalogue/run/{run.pk}/change/").status_code == 200
