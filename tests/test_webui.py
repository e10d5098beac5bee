"""Server-side checks of the web pages: what they show with and without results, and bad input."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.contrib.auth.models import User

from catalogue.models import ExperimentResult, Galaxy, Run, Survey
from catalogue.orchestration.stage import start_stage
from catalogue.orchestration.workflow import start_workflow
from catalogue.services.cutouts import cutout_for_preprocessing
from catalogue.services.image_store import IMAGE_DTYPE, load_log_images
from catalogue.services.ingest import ingest_bundle
from pipeline.images.display import asinh_display, mark_points, png_bytes
from pipeline.images.preprocess import ImageMeta, preprocess, remove_stars
from pipeline.presets import preset
from tests.test_api import catalogue  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.django_db


@pytest.mark.usefixtures("catalogue")
def test_catalogue_browser_filters_sorts_and_links_downloads(client):
    html = client.get("/catalogue/?survey=api&split=test&model=g_morph&ordering=-ml_g").content.decode()
    assert "20 galaxies" in html and "predicted M/L (g_morph)" in html
    assert 'href="/api/catalogue.fits?survey=api&amp;split=test&amp;model=g_morph&amp;ordering=-ml_g"' in html
    assert "cone radius [deg]" in html and "[invalid name]" not in html


@pytest.mark.usefixtures("catalogue")
def test_catalogue_browser_explains_bad_filters(client):
    assert "needs ra, dec and radius" in client.get("/catalogue/?ra=10&dec=2").content.decode()
    assert "no model named" in client.get("/catalogue/?survey=api&model=nope").content.decode()
    assert client.get("/catalogue/?ordering=password").status_code == 200  # unknown sort key: default order


def test_pages_say_plainly_what_has_not_been_computed(client, catalogue):  # noqa: F811 - the fixture
    survey, model = catalogue
    assert "have not been run on this survey yet" in client.get("/surveys/api/experiments/").content.decode()
    html = client.get(f"/models/{model.pk}/").content.decode()
    assert "Predictions on the test split" in html  # the fixture's model has predicted every galaxy
    empty = Survey.objects.create(name="empty")
    assert "No model trained on this survey yet" in client.get(f"/surveys/{empty.name}/").content.decode()
    assert client.get("/models/99999/").status_code == 404


def test_experiments_page_and_csv(client, catalogue):  # noqa: F811 - the fixture
    survey, _ = catalogue
    run = Run.objects.create(stage="experiments", survey=survey, status="succeeded")
    ExperimentResult.objects.create(
        experiment="significance",
        method="gi_morph over gi",
        l1=1.6,
        n=195,
        survey=survey,
        run=run,
        details={
            "ks_pvalue": 0.084,
            "bootstrap_pvalue": 0.00041,
            "mean_l1_gain": 0.39,
            "bootstrap_ci95": [0.16, 0.64],
            "per_class_gain": {
                "edge-on": {
                    "n": 31,
                    "mean_l1_gain": 0.88,
                    "ks_pvalue": 0.0123,
                    "bootstrap_pvalue": 0.0007,
                    "bootstrap_ci95": [0.4, 1.3],
                },
                "irregular": {"n": 4, "mean_l1_gain": -0.2},
            },
        },
    )
    html = client.get("/surveys/api/experiments/").content.decode()
    assert "gi_morph over gi" in html and "0.084" in html and "0.00041" in html
    per_class = html[html.index('id="significance-per-class"') :]
    assert "edge-on" in per_class and "0.012" in per_class and "0.0007" in per_class and "0.400 to 1.300" in per_class
    assert "irregular" in per_class and "fewer than 10 galaxies: not tested" in per_class
    response = client.get("/surveys/api/experiments.csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["method"] == "gi_morph over gi" and float(rows[0]["ks_pvalue"]) == 0.084
    assert response["Content-Disposition"].endswith('experiments.csv"')


def test_staff_start_a_run_from_the_admin_and_see_why_it_was_refused(client, catalogue):  # noqa: F811 - the fixture
    survey, _ = catalogue
    client.force_login(User.objects.create_superuser("boss", "b@example.org", "x"))
    form = client.get("/admin/catalogue/run/start/").content.decode()
    assert 'name="stages"' in form and "paper" in form
    refused = client.post("/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["gbm"], "preset": "test"})
    assert refused.status_code == 200 and "run the features stage first" in refused.content.decode()
    started = client.post("/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["preprocess"], "preset": "test"})
    run = Run.objects.filter(survey=survey, stage="preprocess").latest("created")
    assert started.status_code == 302 and started["Location"] == f"/runs/{run.pk}/"
    assert "Start a run" in client.get("/admin/catalogue/run/").content.decode()


def test_plotly_is_served_locally(client):
    response = client.get("/js/plotly.min.js")
    assert response.status_code == 200 and response["Content-Type"] == "text/javascript"
    assert b"plotly" in b"".join(response.streaming_content)[:2000].lower()


def test_staff_start_several_stages_from_the_admin_and_a_failing_stage_ends_the_workflow(client, catalogue):  # noqa: F811
    survey, _ = catalogue
    client.force_login(User.objects.create_superuser("boss", "b@example.org", "x"))
    response = client.post(
        "/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["preprocess", "gbm"], "preset": "test"}
    )
    workflow = Run.objects.get(survey=survey, stage="workflow")
    assert response["Location"] == f"/runs/{workflow.pk}/"
    # preprocess has nothing to do here (no images) and succeeds; gbm then refuses: no CNN features.
    assert workflow.status == "failed" and "stage gbm could not start" in workflow.message
    assert "run the features stage first" in workflow.error
    assert list(workflow.children.values_list("stage", "status")) == [("preprocess", "succeeded")]
    page = client.get(f"/runs/{workflow.pk}/").content.decode()
    assert "preprocess" in page and "stage gbm could not start" in page and "gbm: not started" in page


def _staff(client) -> None:
    client.force_login(User.objects.create_superuser("staff", "s@example.org", "x"))


def test_a_preprocess_run_started_from_the_admin_is_reused_by_a_later_workflow(client, synthetic_bundle):
    ingest_bundle(synthetic_bundle, "adminpre")
    survey = Survey.objects.get(name="adminpre")
    _staff(client)
    chosen = client.post("/admin/catalogue/survey/", {"action": "start_run", "_selected_action": [survey.pk]})
    assert chosen.status_code == 302 and chosen["Location"] == f"/admin/catalogue/run/start/?survey={survey.pk}"
    response = client.post("/admin/catalogue/run/start/", {"survey": survey.pk, "stages": ["preprocess"], "preset": "fast"})
    assert response.status_code == 302
    run = Run.objects.get(survey=survey, stage="preprocess")
    assert run.status == "succeeded" and run.items_done > 100 and run.config["inputs"]["preset"] == "fast"
    workflow = start_workflow(survey, ["preprocess"], preset_name="fast")
    assert workflow.status == "succeeded" and workflow.config["reused"] == {"preprocess": run.pk}


def test_the_star_subtracted_image_is_the_stages_own_star_removal_pixel_for_pixel(client, synthetic_bundle):
    ingest_bundle(synthetic_bundle, "stars")
    survey = Survey.objects.get(name="stars")
    assert survey.has_star_catalogue
    start_stage("preprocess", survey, preset_name="test")
    (resolution,) = preset("test")["resolutions"]
    with_stars = Galaxy.objects.filter(survey=survey, preprocessed__status="ok", preprocessed__n_stars_removed__gte=1)
    galaxy = with_stars.select_related("survey", "preprocessed").order_by("objid").first()
    assert galaxy is not None, "the synthetic survey has galaxies with stars in their cutouts"

    cutout = cutout_for_preprocessing(galaxy)
    removal = remove_stars(cutout.data, cutout.psf_fwhm_px, cutout.prior_xy, cutout.seed)
    assert len(removal.stars) == galaxy.preprocessed.n_stars_removed
    # What the stage stored is the log scaling of exactly this star-removed image ...
    meta = ImageMeta(redshift=galaxy.z, lum_dist_mpc=galaxy.lum_dist_mpc, pixel_kpc=1.0)
    expected = preprocess(removal.cleaned, meta, (resolution,)).resized[resolution]
    stored = load_log_images([galaxy], resolution)[0]
    assert np.array_equal(stored, expected.astype(IMAGE_DTYPE).astype(np.float32))
    # ... and the page shows exactly this image, its removed stars circled.
    png = client.get(f"/galaxies/{galaxy.pk}/clean.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    picture = mark_points(
        asinh_display(removal.cleaned, reference=removal.square),
        [(s.x, s.y) for s in removal.stars],
        radius=2.5 * cutout.psf_fwhm_px,
    )
    assert png.content == png_bytes(picture, size=256)
    # A different seed would remove the stars differently: the comparison can tell.
    other = remove_stars(cutout.data, cutout.psf_fwhm_px, cutout.prior_xy, cutout.seed + 1)
    assert not np.array_equal(other.cleaned, removal.cleaned)
    # The test preset also made the i channels: the page draws the galaxy's g - i map with its units.
    page = client.get(f"/galaxies/{galaxy.pk}/").content.decode()
    assert galaxy.preprocessed.i_band == "ok" and 'id="colour-map"' in page and "g - i [mag]" in page
    assert f"The catalogue's g - i: {galaxy.mag_g - galaxy.mag_i:.2f} mag." in page
