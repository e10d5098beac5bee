"""The web UI in a real browser: Playwright driving Debian's chromium against a live server.

One test walks the paths a user takes, on a small synthetic survey taken through every
stage with the test preset: the catalogue (filtered), a galaxy page with its three image
stages and figures, a model page, the experiments page, then the admin: log in, start a
run and watch it finish on its page. Every page must render its plotly figures, log no
console error and make no failed request. Screenshots go to ``$TEST_ARTIFACTS``
(default ``var/test-artifacts``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.db import connections

from tests.services import services_required

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "var" / "test-artifacts"))

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are still synchronous, so Django's async-safety guard is lifted for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if CHROMIUM is None:
        if services_required():
            pytest.fail("REQUIRE_SERVICES=1 but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()
        # The test's ORM calls ran beside Playwright's event loop, on connections of their own
        # that pytest-django does not know: close them, or the test database cannot be dropped.
        connections.close_all()


class Watched:
    """A page that records console errors and failed requests."""

    def __init__(self, page, base_url: str):
        self.page, self.base_url, self.problems = page, base_url, []
        page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def open(self, path: str, shot: str):
        self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        return self.check(shot)

    def check(self, shot: str):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
        assert not self.problems, self.problems
        return self.page

    def plots_rendered(self) -> int:
        """How many plotly figures were drawn (plotly marks each figure's div and fills it with SVG)."""
        return self.page.locator("div.js-plotly-plot:has(svg.main-svg)").count()


@pytest.mark.django_db(transaction=True)
def test_a_user_browses_the_catalogue_and_staff_start_a_run(live_server, browser, small_bundle):
    from django.contrib.auth.models import User

    from catalogue.models import Galaxy, Run, Survey, TrainedModel
    from catalogue.orchestration.start import start
    from catalogue.services.ingest import ingest_bundle

    ingest_bundle(small_bundle, "web")
    survey = Survey.objects.get(name="web")
    assert start(survey, preset_name="test").status == "succeeded"  # every stage
    User.objects.create_superuser("staff", "staff@example.org", "secret-pass")
    page = Watched(browser.new_page(viewport={"width": 1280, "height": 900}), live_server.url)

    # The catalogue, filtered to the test split and sorted by M/L.
    page.open("/catalogue/?survey=web", "catalogue")
    page.page.select_option("#id_split", "test")
    page.page.click("button[type=submit]")
    page.page.wait_for_load_state("networkidle")
    page.page.click("a[aria-label='sort by M/L_g']")
    page.page.wait_for_load_state("networkidle")
    page.check("catalogue-filtered")
    n_test = Galaxy.objects.filter(survey=survey, split="test").count()
    assert f"{n_test} galaxies" in page.page.content()
    assert page.page.locator("table tr").count() == min(n_test, 50) + 1

    # A galaxy: three image stages, its g - i map (the test preset makes one), the GZ2 and prediction figures.
    galaxy = Galaxy.objects.filter(survey=survey, split="test", preprocessed__status="ok", preprocessed__i_band="ok").first()
    page.open(f"/galaxies/{galaxy.pk}/", "galaxy")
    images = page.page.locator(".images img")
    assert images.count() >= 3
    assert all(images.nth(i).evaluate("img => img.naturalWidth") == 256 for i in range(images.count()))
    assert page.plots_rendered() == 3
    assert page.page.locator("#colour-map.js-plotly-plot:has(svg.main-svg)").count() == 1

    # A model page with every figure, and the experiments page.
    model = TrainedModel.objects.get(survey=survey, name="g_morph")
    page.open(f"/models/{model.pk}/", "model")
    assert page.plots_rendered() == 5  # Figs. 4-6, importances, interval calibration
    assert page.page.locator("#calibration .main-svg").count() > 0
    page.open(f"/surveys/{survey.name}/experiments/", "experiments")
    assert page.plots_rendered() == 1 and "Table 1" in page.page.content()

    # Staff: log in to the admin, start a run, watch it finish on its page.
    page.open("/admin/login/?next=/admin/catalogue/run/start/", "admin-login")
    page.page.fill("#id_username", "staff")
    page.page.fill("#id_password", "secret-pass")
    page.page.click("input[type=submit]")
    page.page.wait_for_load_state("networkidle")
    page.page.select_option("#id_survey", label="web")
    page.page.check("input[name=stages][value=experiments]")
    page.page.check("input[name=stages][value=predict]")
    page.page.select_option("#id_preset", "test")
    page.page.check("#id_force")  # both already ran on this survey with these inputs: redo them, not reuse
    page.page.click("input[type=submit]")
    page.page.wait_for_url("**/runs/*/")
    page.page.wait_for_selector("#run-status:has-text('succeeded')", timeout=120_000)
    page.check("run")
    workflow = Run.objects.filter(survey=survey, stage="workflow").latest("created")
    assert page.page.url.endswith(f"/runs/{workflow.pk}/") and workflow.status == "succeeded"
    assert sorted(workflow.children.values_list("stage", flat=True)) == ["experiments", "predict"]
    assert page.page.locator("#run-stages li").count() == 2

    # The model sets side by side, and one galaxy's M/L from an uploaded cutout (logged in).
    model_set = survey.model_sets.get()
    page.open("/models/sets/", "model-sets")
    assert page.page.locator("#model-sets th", has_text=model_set.name).count() == 1
    upload = Galaxy.objects.filter(survey=survey, split="test", preprocessed__status="ok").order_by("objid").first()
    page.open("/predict/", "predict-form")
    page.page.set_input_files("input[name=image]", str(small_bundle / "images" / f"{upload.objid}_g.fits"))
    page.page.fill("input[name=z]", str(upload.z))
    page.page.fill("input[name=mag_g]", str(upload.mag_g))
    page.page.select_option("select[name=models]", model_set.name)
    page.page.click("#predict-form button[type=submit]")
    page.page.wait_for_load_state("networkidle")
    page.check("predict-result")
    assert page.page.locator("#predictions tr").count() == 1 + 3  # the g models; no mag_i given
    assert "gi_morph skipped: needs mag_i" in page.page.content()
    pictures = page.page.locator("#upload-images img")
    assert pictures.count() == 3 and all(pictures.nth(i).evaluate("img => img.naturalWidth") == 256 for i in range(3))

    # A run a worker is still on: the page follows it through the API until it fails, with the error.
    busy = Run.objects.create(stage="gbm", survey=survey, preset="test", status="running", progress=0.25, message="fitting gi")
    page.open(f"/runs/{busy.pk}/", "run-busy")
    assert page.page.locator("#cancel").is_visible()
    Run.objects.filter(pk=busy.pk).update(status="failed", progress=0.5, error="ValueError: the worker gave up")
    page.page.wait_for_selector("#run-status:has-text('failed')", timeout=15_000)
    assert page.page.locator("#run-error").inner_text() == "ValueError: the worker gave up"
    assert page.page.locator("#cancel").count() == 0  # nothing left to cancel
    page.check("run-failed")

    # The same pages on a phone.
    phone = Watched(browser.new_page(viewport={"width": 390, "height": 844}), live_server.url)
    phone.open(f"/galaxies/{galaxy.pk}/", "galaxy-phone")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing wider than the screen
