"""The REST API, the downloads and the IVOA cone search, over real HTTP where clients use it."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy.table import Table
from astropy.units import UnitsWarning
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.test import APIClient

from catalogue.columns import PREDICTION_FIELDS
from catalogue.models import ExperimentResult, Galaxy, GZ2Votes, Prediction, Run, Survey, TrainedModel
from catalogue.selectors import galaxies_in_cone
from pipeline import gz2
from pipeline.sky import healpix_index, unit_vector

pytestmark = pytest.mark.django_db

N = 60


def make_survey(name: str, seed: int, objid_start: int = 1000) -> Survey:
    rng = np.random.default_rng(seed)
    survey = Survey.objects.create(name=name)
    ra, dec = rng.uniform(149, 151, N), rng.uniform(1, 3, N)
    ra[:5] = rng.uniform(359.8, 360, 5)  # a few across RA = 0
    x, y, z = unit_vector(ra, dec)
    splits = ["train", "val", "test"]
    Galaxy.objects.bulk_create(
        Galaxy(
            survey=survey,
            objid=objid_start + i,
            ra=float(ra[i]),
            dec=float(dec[i]),
            healpix=int(h),
            sky_x=x[i],
            sky_y=y[i],
            sky_z=z[i],
            z=0.02 + 0.001 * i,
            lum_g=1e10 * (1 + i),
            ml_g=0.5 + 0.1 * i,
            ml_g_err=0.1,
            split=splits[i % 3],
            status="ok" if i < N - 5 else "excluded",
            morphology=["disk", "elliptical", "edge-on"][i % 3],
        )
        for i, h in enumerate(healpix_index(ra, dec))
    )
    return survey


@pytest.fixture
def catalogue():
    cache.clear()  # throttling counts live in the cache
    survey = make_survey("api", 1)
    make_survey("other", 2, objid_start=1000 + N - 3)  # three objids repeat across surveys
    galaxies = list(Galaxy.objects.filter(survey=survey).order_by("objid"))
    GZ2Votes.objects.bulk_create(
        GZ2Votes(galaxy=g, fractions=np.full(gz2.N_ANSWERS, 0.5), probabilities=np.full(gz2.N_ANSWERS, 0.1))
        for g in galaxies[:10]
    )
    run = Run.objects.create(stage="gbm", survey=survey, status="succeeded", preset="test")
    model = TrainedModel.objects.create(
        kind="gbm",
        name="g_morph",
        survey=survey,
        run=run,
        preset="test",
        metrics={"test": {"l1": 2.3}},
        hyperparameters={"features": ["lum_sum"]},
    )
    Prediction.objects.bulk_create(
        Prediction(galaxy=g, model=model, ml_pred=1.0 + 0.05 * i, mstar_pred=(1.0 + 0.05 * i) * g.lum_g)
        for i, g in enumerate(galaxies)
    )
    ExperimentResult.objects.create(experiment="ablation", method="all", l1=2.29, n=10, survey=survey, run=run)
    return survey, model


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_authenticate(User.objects.create_user("boss", password="x", is_staff=True))
    return client


def every_page(client, url: str) -> list[dict]:
    rows = []
    while url:
        page = client.get(url).json()
        rows += page["results"]
        url = page["next"]
    return rows


@pytest.mark.usefixtures("catalogue")
def test_galaxy_filters_ordering_and_cursor_pages(client):
    rows = every_page(client, "/api/galaxies/?survey=api&page_size=7")
    assert len(rows) == N and len({r["id"] for r in rows}) == N  # every galaxy once across pages
    test = every_page(client, "/api/galaxies/?survey=api&split=test&z_min=0.03&ml_max=5&ordering=-z")
    assert test and all(r["split"] == "test" and r["z"] >= 0.03 and r["ml_g"] <= 5 for r in test)
    assert [r["z"] for r in test] == sorted((r["z"] for r in test), reverse=True)
    edge_on = every_page(client, "/api/galaxies/?survey=api&morphology=edge-on&status=ok")
    assert edge_on and {r["morphology"] for r in edge_on} == {"edge-on"}
    assert len(every_page(client, "/api/galaxies/?survey=api&has_gz2=true")) == 10
    assert client.get("/api/galaxies/?split=sideways").status_code == 400


def test_predictions_join_the_list_and_filter_it(catalogue, client):
    _, model = catalogue
    rows = every_page(client, "/api/galaxies/?survey=api&model=g_morph&ml_pred_min=2&ml_pred_max=3")
    assert rows and all(2 <= r["ml_pred"] <= 3 for r in rows)
    assert rows[0]["mstar_pred"] == pytest.approx(rows[0]["ml_pred"] * rows[0]["lum_g"])
    by_id = every_page(client, f"/api/galaxies/?model={model.pk}&ml_pred_min=2&ml_pred_max=3")
    assert {r["id"] for r in by_id} == {r["id"] for r in rows}
    assert "ml_pred" not in every_page(client, "/api/galaxies/?survey=api")[0]
    bad = client.get("/api/galaxies/?survey=api&model=gmorph")
    assert bad.status_code == 400 and "no model named 'gmorph'" in bad.json()["model"][0]
    # Without a model the range reads the catalogue's M/L; with the predictions left out, nothing to filter.
    unpredicted = client.get("/api/galaxies/?ml_pred_min=1&catalogue_ml=false")
    assert unpredicted.status_code == 400 and "leave catalogue_ml on" in unpredicted.json()["catalogue_ml"][0]


@pytest.mark.parametrize("query", ["", "&model=g_morph"])
@pytest.mark.usefixtures("catalogue")
def test_list_rows_equal_drf_field_by_field_representation(client, query):
    """The list builds rows from stored values for speed; they must be what DRF's fields would give."""
    from rest_framework import serializers

    from catalogue.api.filters import GalaxyFilter
    from catalogue.api.serializers import GalaxySerializer

    Galaxy.objects.filter(objid=1001).update(mag_g=None, status_reason="faint, & odd")  # nulls and text as stored
    rows = every_page(client, f"/api/galaxies/?survey=api{query}&page_size=13")
    filterset = GalaxyFilter({"survey": "api", "model": query.partition("=")[2]}, queryset=Galaxy.objects.all())
    assert filterset.is_valid()
    galaxies = {g.pk: g for g in filterset.qs}
    serializer = GalaxySerializer()
    for row in rows:
        galaxy = galaxies[row["id"]]
        expected = serializers.ModelSerializer.to_representation(serializer, galaxy)
        if not query:
            expected = {k: v for k, v in expected.items() if k not in PREDICTION_FIELDS}
        assert row["url"].endswith(f"/api/galaxies/{galaxy.objid}/?survey=api")
        assert {k: v for k, v in row.items() if k != "url"} == {k: v for k, v in expected.items() if k != "url"}
    assert len(rows) == N and (("ml_pred" in rows[0]) == bool(query))


@pytest.mark.parametrize(("ra", "dec", "radius"), [(150, 2, 0.5), (0.0, 1.5, 1.0), (359.9, 2.0, 0.3)])
@pytest.mark.usefixtures("catalogue")
def test_cone_filter_agrees_with_the_selector(client, ra, dec, radius):
    rows = every_page(client, f"/api/galaxies/?survey=api&ra={ra}&dec={dec}&radius={radius}")
    expected = set(galaxies_in_cone(ra, dec, radius, Galaxy.objects.filter(survey__name="api")).values_list("id", flat=True))
    assert {r["id"] for r in rows} == expected


@pytest.mark.usefixtures("catalogue")
def test_bad_cones_are_400_with_the_reason(client):
    assert "needs ra, dec and radius" in client.get("/api/galaxies/?ra=150&dec=2").json()["radius"][0]
    assert client.get("/api/galaxies/?ra=150&dec=95&radius=1").status_code == 400
    assert client.get("/api/galaxies/?ra=150&dec=2&radius=90").status_code == 400


@pytest.mark.usefixtures("catalogue")
def test_galaxy_detail_has_units_votes_and_every_prediction(client):
    detail = client.get("/api/galaxies/1001/").json()
    assert detail["objid"] == 1001 and detail["units"]["ml_g"] == "solMass/solLum" and detail["units"]["mstar_pred"] == "solMass"
    assert [p["model_name"] for p in detail["predictions"]] == ["g_morph"]
    assert detail["predictions"][0]["error_dex"] == pytest.approx(np.log10(1.05 / 0.6))
    assert detail["gz2"]["answers"][0]["volunteers"] == pytest.approx(0.1) and detail["gz2"]["answers"][0]["cnn1"] is None
    repeated = 1000 + N - 2
    assert "several surveys" in client.get(f"/api/galaxies/{repeated}/").json()["survey"][0]
    assert client.get(f"/api/galaxies/{repeated}/?survey=other").json()["survey"] == "other"
    assert client.get("/api/galaxies/99/").status_code == 404


def test_surveys_models_experiments_and_staff_only_artifacts(catalogue, client, staff_client):
    _, model = catalogue
    surveys = {s["name"]: s for s in client.get("/api/surveys/").json()["results"]}
    assert surveys["api"]["n_galaxies"] == N and sum(surveys["api"]["n_by_split"].values()) == N - 5
    models = client.get("/api/models/?survey__name=api&name=g_morph").json()["results"]
    assert (
        [m["id"] for m in models] == [model.pk] and models[0]["n_predictions"] == N and models[0]["metrics"]["test"]["l1"] == 2.3
    )
    experiments = client.get("/api/experiments/?experiment=ablation").json()["results"]
    assert experiments[0]["l1"] == 2.29
    assert client.get(f"/api/models/{model.pk}/artifact/").status_code in (401, 403)
    assert staff_client.get(f"/api/models/{model.pk}/artifact/").status_code == 404  # staff: allowed, but it has no file


def test_runs_are_started_and_cancelled_by_staff_only(catalogue, client, staff_client):
    survey, _ = catalogue
    assert client.post("/api/runs/", {"survey": "api", "stage": "gbm"}, format="json").status_code in (401, 403)
    refused = staff_client.post("/api/runs/", {"survey": "api", "stage": "gbm", "preset": "test"}, format="json")
    assert refused.status_code == 400 and "run the features stage first" in refused.json()["detail"]
    assert staff_client.post("/api/runs/", {"survey": "api", "stage": "dance"}, format="json").status_code == 400
    queued = Run.objects.create(stage="preprocess", survey=survey, status="queued")
    assert client.post(f"/api/runs/{queued.pk}/cancel/").status_code in (401, 403)
    cancelled = staff_client.post(f"/api/runs/{queued.pk}/cancel/").json()
    assert cancelled["status"] == "cancelled"
    assert staff_client.post(f"/api/runs/{queued.pk}/cancel/").status_code == 409  # already over
    detail = client.get(f"/api/runs/{queued.pk}/").json()
    assert detail["status"] == "cancelled" and "log_tail" in detail and detail["failures"] == []


def test_staff_start_one_stage_alone_or_several_as_a_workflow(catalogue, staff_client):
    survey, _ = catalogue
    alone = staff_client.post("/api/runs/", {"survey": "api", "stages": ["preprocess"], "preset": "test"}, format="json")
    assert alone.status_code == 201, alone.json()
    assert alone.json()["stage"] == "preprocess" and alone.json()["status"] == "succeeded"  # no images: nothing to do
    started = staff_client.post("/api/runs/", {"survey": "api", "stages": ["cnn", "preprocess"], "preset": "test"}, format="json")
    assert started.status_code == 201, started.json()
    workflow = started.json()
    assert workflow["stage"] == "workflow" and workflow["status"] == "failed"
    assert workflow["message"].startswith("stage cnn") and "preprocess the survey first" in workflow["message"]
    assert Run.objects.get(pk=workflow["id"]).config["reused"] == {"preprocess": alone.json()["id"]}
    refused = staff_client.post("/api/runs/", {"survey": "api", "stages": ["predict", "experiments"]}, format="json")
    assert refused.status_code == 400 and "run the gbm stage first" in refused.json()["detail"]
    both = staff_client.post("/api/runs/", {"survey": "api", "stage": "gbm", "stages": ["gbm"]}, format="json")
    assert both.status_code == 400 and "either stage" in str(both.json())
    busy = Run.objects.create(stage="gbm", survey=survey, status="running")
    conflict = staff_client.post("/api/runs/", {"survey": "api", "stages": ["gbm", "predict"]}, format="json")
    assert conflict.status_code == 409 and conflict.json()["active_run"] == busy.pk


@pytest.mark.usefixtures("catalogue")
def test_schema_documents_units_and_docs_load_nothing_external(client):
    schema = client.get("/api/schema/?format=json").json()
    galaxy = schema["components"]["schemas"]["Galaxy"]["properties"]
    assert "Msun" in galaxy["ml_g"]["description"] or "solMass" in galaxy["ml_g"]["description"]
    assert galaxy["ra"]["description"].startswith("deg")
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "cdn" not in docs.lower() and "https://" not in docs


@pytest.mark.usefixtures("catalogue")
def test_parameters_the_schema_types_are_checked_not_ignored(client):
    """What schemathesis found: typed parameters given nonsense were silently dropped; now each is a 400."""
    for query in ("has_gz2=null", "z_min=", "page_size=0", "page_size=1001", "page_size=ten", "split="):
        reply = client.get(f"/api/galaxies/?survey=api&{query}")
        assert reply.status_code == 400, query
        assert query.split("=")[0] in reply.json(), reply.json()
    assert client.get("/api/surveys/?page=0").status_code == 400
    assert client.get("/api/surveys/?page=").status_code == 400
    assert client.get("/api/surveys/?page=9").status_code == 404  # past the last page
    assert client.get("/api/galaxies/?survey=api&has_gz2=false&survey=api").status_code == 200
    # An unknown run id matches nothing (an empty page), as any other filter would.
    assert client.get("/api/models/?run=999999").json()["results"] == []
    assert client.get("/api/models/?run=0").status_code == 400


@pytest.mark.usefixtures("catalogue")
def test_paths_the_api_does_not_have_are_json_404s(client):
    for path in ("/api/nothing/", "/api/galaxies/abc/", "/api/galaxies/i%0A%C2%BA/", "/api/runs/0.5/cancel/"):
        reply = client.get(path)
        assert reply.status_code == 404 and reply["Content-Type"] == "application/json", path
        assert "no API endpoint" in reply.json()["detail"]
    assert client.post("/api/runs/0.5/cancel/").status_code == 404  # no CSRF page either


@pytest.mark.usefixtures("catalogue")
def test_schema_types_what_the_responses_hold(client):
    schema = client.get("/api/schema/?format=json").json()
    parts = schema["components"]["schemas"]
    assert parts["Run"]["properties"]["duration_s"]["nullable"] is True  # null while a run is queued
    galaxy = parts["Galaxy"]
    assert "ml_pred" not in galaxy["required"] and galaxy["properties"]["ml_pred"]["nullable"] is True
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"400", "401", "403", "404", "429"} <= set(operation["responses"]), (method, path)
    assert "409" in schema["paths"]["/api/runs/"]["post"]["responses"]
    download = schema["paths"]["/api/catalogue.{fmt}"]["get"]
    assert set(next(p for p in download["parameters"] if p["name"] == "fmt")["schema"]["enum"]) == set(READERS)


READERS = {"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fits": "fits", "votable": "votable", "parquet": "parquet"}


@pytest.mark.parametrize("fmt", list(READERS))
@pytest.mark.usefixtures("catalogue")
def test_downloads_stream_every_format_with_units(client, fmt):
    response = client.get(f"/api/catalogue.{fmt}?survey=api&model=g_morph&split=train")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="morphomass-api-g_morph.{fmt}"'
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsWarning)  # every unit parses, in every format
        table = Table.read(io.BytesIO(b"".join(response.streaming_content)), format=READERS[fmt])
    expected = Galaxy.objects.filter(survey__name="api", split="train")
    assert len(table) == expected.count() and set(table["objid"]) == set(expected.values_list("objid", flat=True))
    assert np.all(table["ml_pred"] > 0)
    if fmt != "csv":
        assert table["ml_pred"].unit.to_string() == "solMass / solLum" and str(table["mstar_pred"].unit) == "solMass"
        assert " ".join(table["ml_g"].description.split()) == (  # VOTable wraps descriptions
            "target g-band mass-to-light ratio (L in g-band solar luminosities, AB M_sun,g = 5.11)"
        )
    if fmt in {"ecsv", "fits", "parquet"}:
        assert table.meta["SURVEY"] == "api" and "g_morph" in table.meta["MODEL"]


@pytest.mark.usefixtures("catalogue")
def test_download_errors(client):
    assert client.get("/api/catalogue.xlsx").status_code == 404
    assert client.get("/api/catalogue.csv?model=g_morph").status_code == 400  # a model name needs a survey


@pytest.mark.usefixtures("catalogue")
def test_anonymous_clients_are_throttled(client, monkeypatch):
    from rest_framework.throttling import AnonRateThrottle

    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "1000/minute"})
    codes = [client.get("/api/surveys/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.django_db(transaction=True)
def test_simple_cone_search_through_pyvo(live_server):
    import pyvo

    cache.clear()
    make_survey("scs", 3)
    service = pyvo.dal.SCSService(f"{live_server.url}/scs/")
    results = service.search(pos=(150.0, 2.0), radius=0.5, verbosity=1).to_table()
    expected = set(galaxies_in_cone(150.0, 2.0, 0.5).values_list("objid", flat=True))
    assert expected and set(results["objid"]) == expected
    assert results.colnames == ["objid", "ra", "dec", "survey"] and set(results["survey"]) == {"scs"}
    wide = service.search(pos=(150.0, 2.0), radius=0.5, verbosity=3).to_table()
    assert "ml_g" in wide.colnames and wide["ml_g"].unit.to_string() == "solMass / solLum"
    across = service.search(pos=(0.0, 2.0), radius=0.5, verbosity=1).to_table()
    assert set(across["objid"]) == set(galaxies_in_cone(0.0, 2.0, 0.5).values_list("objid", flat=True))
    # Errors are VOTable documents with an INFO named Error, which pyvo raises as DALQueryError.
    with pytest.raises(pyvo.dal.DALQueryError, match="SR"):
        service.search(pos=(150.0, 2.0), radius=45.0)
    import urllib.request

    from astropy.io.votable import parse

    with urllib.request.urlopen(f"{live_server.url}/scs/?RA=abc&DEC=2&SR=1") as reply:
        assert reply.status == 200
        document = parse(io.BytesIO(reply.read()))
    assert [(i.name, i.value) for i in document.resources[0].infos] == [("Error", "RA='abc' is not a number (decimal degrees)")]


@pytest.mark.django_db(transaction=True)
def test_the_schema_is_served_to_requests_that_arrive_together(live_server):
    """A threaded server generating the schema for several requests at once answers each (it raced: a 500)."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def status(_: int) -> int:
        with urllib.request.urlopen(f"{live_server.url}/api/schema/?format=json", timeout=60) as reply:
            return reply.status

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(status, range(12))) == [200] * 12
