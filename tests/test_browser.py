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

import numpy as np
import pytest
from astropy.table import Table
from django.db import connections

from tests.bundle_helpers import g_only, ordinary_objids, sample_archive, sample_table
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

    def points_per_figure(self) -> dict[str, int]:
        """Each drawn figure's data points (by its div's id): an empty figure counts none. Plotly's own
        copy of the traces (``_fullData``) holds the arrays decoded; ``data`` may hold them base64-encoded."""
        script = """() => Object.fromEntries([...document.querySelectorAll('div.js-plotly-plot')].map(
            d => [d.id, (d._fullData || []).reduce((n, t) => n + ((t.x || t.z || t.values || []).length || 0), 0)]))"""
        return self.page.evaluate(script)

    def first_row(self) -> dict[str, str]:
        """The catalogue browser's first row, cell text by column."""
        cells = self.page.locator("table tr:nth-child(2) td[data-column]")
        return {cells.nth(i).get_attribute("data-column"): cells.nth(i).inner_text() for i in range(cells.count())}


def same_as_the_api(row: dict[str, str], survey: str) -> None:
    """The browser's first row shows the catalogue M/L, interval and model the API gives for that galaxy."""
    from rest_framework.test import APIClient

    from webui.cells import format_cell, interval

    answer = APIClient().get(f"/api/galaxies/{row['objid']}/?survey={survey}").json()["catalogue_ml"]
    assert answer is not None, row
    assert row["ml"] == format_cell(answer["ml"]) and row["ml_model"] == answer["ml_model"], (row, answer)
    assert row["ml_lo68"] == interval(answer["ml_lo68"], answer["ml_hi68"]), (row, answer)


@pytest.mark.django_db(transaction=True)
def test_a_user_browses_the_catalogue_and_staff_start_a_run(live_server, browser, small_bundle, tmp_path):
    from django.contrib.auth.models import User

    from catalogue.models import Galaxy, Run, Survey, TrainedModel
    from catalogue.orchestration.start import start
    from catalogue.services.ingest import ingest_bundle

    ingest_bundle(small_bundle, "web")
    survey = Survey.objects.get(name="web")
    assert start(survey, preset_name="test").status == "succeeded"  # every stage
    User.objects.create_superuser("staff", "staff@example.org", "secret-pass")
    page = Watched(browser.new_page(viewport={"width": 1280, "height": 900}), live_server.url)

    # An anonymous visitor of /predict/ is told to sign in, on the site's own page.
    anonymous = Watched(browser.new_page(viewport={"width": 1280, "height": 900}), live_server.url)
    anonymous.open("/predict/", "predict-anonymous")
    assert "/accounts/sign-in/?next=/predict/" in anonymous.page.url
    assert "What signing in gives" in anonymous.page.content() and anonymous.page.locator("#id_username").count() == 1

    # The home page and the survey page: predicted M/L and M* first, no empty figure.
    page.open("/", "home")
    assert page.points_per_figure() and all(page.points_per_figure().values()), page.points_per_figure()
    page.open(f"/surveys/{survey.name}/", "survey")
    figures = page.points_per_figure()
    assert figures["predicted-ml"] > 0 and figures["predicted-relations"] > 0 and all(figures.values()), figures

    # The catalogue leads with each galaxy's predicted M/L, as the API gives it; filtered, then sorted by M/L.
    page.open("/catalogue/?survey=web", "catalogue")
    same_as_the_api(page.first_row(), "web")
    page.page.fill("#id_z_max", "0.1")
    page.page.click("button[type=submit]")
    page.page.wait_for_load_state("networkidle")
    page.page.click("a[aria-label='sort by M/L']")
    page.page.wait_for_load_state("networkidle")
    page.check("catalogue-filtered")
    n_near = Galaxy.objects.filter(survey=survey, z__lte=0.1).count()
    assert f"{n_near} galaxies" in page.page.content()
    assert page.page.locator("table tr").count() == min(n_near, 50) + 1
    assert "log(M/L / target)" in page.page.inner_text("table")  # the survey has targets: the residual beside them

    # A g-only survey without targets, the set applied to it: the same, with no target column.
    g_bundle, _ = g_only(small_bundle, tmp_path / "g-only", n=30)
    ingest_bundle(g_bundle, "web-g")
    g_survey = Survey.objects.get(name="web-g")
    assert start(g_survey, model_set=survey.model_sets.get()).status == "succeeded"
    page.open("/catalogue/?survey=web-g", "catalogue-g-only")
    same_as_the_api(page.first_row(), "web-g")
    table = page.page.inner_text("table")
    assert "target" not in table and "excluded" not in table and "M/L_g" not in table  # no target columns
    page.open("/surveys/web-g/", "survey-g-only")
    figures = page.points_per_figure()
    assert figures["predicted-ml"] > 0 and figures["predicted-relations"] > 0 and all(figures.values()), figures
    assert "ml-histogram" not in figures  # no targets, no target plot

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
    # Without a broker the stages run inside this request (as in the demo): on a busy machine it takes
    # longer than a click's 30 s wait for the next page, so the page is awaited on its own.
    page.page.click("input[type=submit]", no_wait_after=True)
    page.page.wait_for_url("**/runs/*/", timeout=240_000)
    page.page.wait_for_selector("#run-status:has-text('succeeded')", timeout=120_000)
    page.check("run")
    workflow = Run.objects.filter(survey=survey, stage="workflow").latest("created")
    assert page.page.url.endswith(f"/runs/{workflow.pk}/") and workflow.status == "succeeded"
    assert sorted(workflow.children.values_list("stage", flat=True)) == ["experiments", "predict"]
    assert page.page.locator("#run-stages li").count() == 2

    # A signed-in user makes an API token and sees it.
    page.open("/accounts/token/", "token-none")
    page.page.click("button[value=make]")
    page.page.wait_for_load_state("networkidle")
    page.check("token")
    assert page.page.locator("#api-token").inner_text() == User.objects.get(username="staff").auth_token.key

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

    # A sample of the user's own as a prediction job: an archive and a table on the same page, the job listed with
    # its progress, and its results downloaded and read back.
    objids = ordinary_objids(small_bundle, 10)
    sample = sample_archive(small_bundle, objids, tmp_path / "my-sample.zip")
    table = sample_table(small_bundle, objids, tmp_path / "my-sample.csv")
    page.page.set_input_files("#job-form input[name=sample]", str(sample))
    page.page.set_input_files("#job-form input[name=table]", str(table))
    page.page.select_option("#job-form select[name=models]", model_set.name)
    page.page.click("#job-form button[type=submit]")
    page.page.wait_for_selector("#jobs tr[data-phase=COMPLETED]", timeout=120_000)
    page.check("predict-job")
    row = page.page.locator("#jobs tr[data-phase=COMPLETED]")
    assert "Job " in page.page.inner_text("ul.messages") and row.locator("td").nth(3).inner_text() == "10"
    with page.page.expect_download() as download:
        row.locator("a.download", has_text="ecsv").click()
    results = Table.read(download.value.path(), format="ascii.ecsv")
    # Chromium reports a download's request as aborted (the page did not navigate): not a problem of the page.
    page.problems = [p for p in page.problems if not (p.startswith("failed: ") and p.endswith("/results.ecsv"))]
    assert sorted(results["objid"]) == sorted(objids) and str(results["ml"].unit) == "solMass / solLum"
    assert list(results["status"]) == ["predicted"] * 10 and np.all(np.isfinite(results["ml"]))

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
