"""Model sets that travel: recorded by training, applied to other surveys without training,
and one uploaded galaxy predicted on demand (test preset, a small synthetic survey).

Survey A is the session's shared trained survey (tests/trained.py); survey C is A's own bundle
ingested again and predicted with A's set,
so every prediction must equal A's (the same images through the same networks and models);
survey G is a g-only bundle without targets, GZ2 votes or stars, with one galaxy moved to a
redshift far beyond the training range.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from catalogue.models import FeatureVector, Galaxy, ModelSet, Prediction, Run, Survey, TrainedModel
from catalogue.orchestration.stage import start_stage
from catalogue.orchestration.start import start
from catalogue.orchestration.workflow import start_workflow
from catalogue.registry import apply_stages
from catalogue.selectors import resolve_model_set
from catalogue.services import predict_one
from catalogue.services.export import export_catalogue
from catalogue.services.ingest import ingest_bundle
from catalogue.services.model_sets import mark_current
from pipeline.learning.named_models import NAMED_MODELS
from pipeline.simulate.survey import simulate_survey
from tests.bundle_helpers import g_only
from tests.trained import INJECTED, coverage_tolerance

NAMES = [spec.name for spec in NAMED_MODELS]
I_BAND_MODELS = {"gi", "gi_morph", "powerlaw_gi", "gi_images"}
#: Survey B: another draw of the simulator (seed) and another size than A's 200 galaxies.
OTHER_N, OTHER_SEED = 300, 23
COMPARED = ("ml_pred", "mstar_pred", "ml_lo68", "ml_hi68", "ml_lo95", "ml_hi95", "mstar_lo68", "mstar_hi95")


@pytest.fixture(scope="module")
def travelled(request, django_db_setup, django_db_blocker, synthetic_bundle, tmp_path_factory):  # noqa: ARG001 - ordering
    """A: the shared trained survey; C (A's bundle again) and G (g-only) and B (another seed) predicted with A's set."""
    from django.conf import settings

    from tests.conftest import shared_trained_survey

    trained_survey = shared_trained_survey(request.config, django_db_blocker, synthetic_bundle, tmp_path_factory)
    media = trained_survey.media  # A's artifacts, and the other surveys' images beside them
    old_media, settings.MEDIA_ROOT = settings.MEDIA_ROOT, media
    bundle = trained_survey.bundle
    g_bundle, far_objid = g_only(bundle, tmp_path_factory.mktemp("gonly") / "bundle")
    with django_db_blocker.unblock():
        a = Survey.objects.get(pk=trained_survey.survey.pk)
        model_set = ModelSet.objects.get(run=trained_survey.runs["gbm"])
        ingest_bundle(bundle, "setsC")
        c = Survey.objects.get(name="setsC")
        applied_c = start(c, model_set=model_set)
        ingest_bundle(g_bundle, "setsG")
        g = Survey.objects.get(name="setsG")
        other = tmp_path_factory.mktemp("other") / "bundle"
        simulate_survey(other, n=OTHER_N, seed=OTHER_SEED, workers=2)
        ingest_bundle(other, "setsB")
        b = Survey.objects.get(name="setsB")
        applied_b = start(b, model_set=model_set)
        yield {
            "a": a,
            "b": b,
            "applied_b": applied_b,
            "c": c,
            "g": g,
            "set": model_set,
            "applied_c": applied_c,
            "bundle": bundle,
            "far": far_objid,
            "media": media,
        }
        Survey.objects.filter(name__in=["setsB", "setsC", "setsG"]).delete()
    settings.MEDIA_ROOT = old_media


@pytest.fixture
def sets(travelled, trained):  # noqa: ARG001 - trained puts the media in place and checks the survey is there
    return travelled


def predictions_by_objid(survey: Survey) -> dict[tuple[int, str], Prediction]:
    rows = Prediction.objects.filter(galaxy__survey=survey).select_related("galaxy", "model")
    return {(p.galaxy.objid, p.model.name): p for p in rows}


@pytest.mark.django_db
def test_training_records_a_model_set_with_its_lineage_and_metrics(sets):
    model_set, a = sets["set"], sets["a"]
    gbm = Run.objects.get(survey=a, stage="gbm")
    assert model_set.name == f"trained@{gbm.pk}" and model_set.preset == "test"
    assert sorted(model_set.named_models.values_list("name", flat=True)) == sorted(NAMES)
    assert sorted(model_set.networks.values_list("name", flat=True)) == ["cnn1", "cnn2", "cnn3", "cnn4", "cnn4gi"]
    assert set(lineage_networks := model_set.lineage["networks"]) == {"cnn1", "cnn2", "cnn3", "cnn4", "cnn4gi"}, lineage_networks
    assert model_set.resolutions == sorted({n.hyperparameters["size"] for n in model_set.networks.all()})
    lineage = model_set.lineage
    assert lineage["training_survey"] == "trained" and lineage["runs"]["gbm"] == [gbm.pk]
    assert lineage["runs"]["cnn"] == [Run.objects.get(survey=a, stage="cnn").pk]
    assert lineage["runs"]["preprocess"] == [Run.objects.get(survey=a, stage="preprocess").pk]
    n_learning = Galaxy.objects.filter(survey=a, status="ok", ml_g__isnull=False).exclude(split="").count()
    assert lineage["galaxies"]["learning_sample"] == n_learning > 100
    assert len(lineage["training_data_sha256"]) == 64 and lineage["code"]["stages"]["gbm"] >= 1
    g_morph = TrainedModel.objects.get(model_set=model_set, name="g_morph")
    assert model_set.metrics["g_morph"]["test"]["l1"] == pytest.approx(g_morph.metrics["test"]["l1"])
    calibration = g_morph.metrics["calibration"]
    tolerance_68 = coverage_tolerance(0.68, calibration["n"], calibration["calibrated_on"]["galaxies"])
    assert abs(model_set.metrics["g_morph"]["coverage_68"] - 0.68) < tolerance_68
    assert Run.objects.get(survey=a, stage="gbm").result["model_set"] == model_set.name


@pytest.mark.django_db
def test_applying_a_set_to_the_same_bundle_reproduces_every_prediction(sets):
    assert sets["applied_c"].status == "succeeded", sets["applied_c"].message
    children = {r.stage: r for r in sets["applied_c"].children.all()}
    assert set(children) == set(apply_stages())  # nothing trained on C
    assert not TrainedModel.objects.filter(survey=sets["c"]).exists()
    own, applied = predictions_by_objid(sets["a"]), predictions_by_objid(sets["c"])
    assert len(applied) == len(own) > 150 * len(NAMES)
    assert set(applied) == set(own)
    for key, mine in own.items():
        theirs = applied[key]
        assert theirs.model_id == mine.model_id  # the set's own model predicted C
        for name in COMPARED:
            a, c = getattr(mine, name), getattr(theirs, name)
            assert (a is None and c is None) or c == pytest.approx(a, rel=1e-6), (key, name)
        assert theirs.support_reasons == mine.support_reasons, key


@pytest.mark.django_db
def test_the_applied_set_chooses_what_exports_and_the_api_show(sets, tmp_path):
    c, model_set = sets["c"], sets["set"]
    out = tmp_path / "c.fits"
    n = export_catalogue(out, "fits", c, "g_morph", model_set.name)
    table = Table.read(out)
    assert len(table) == n == Galaxy.objects.filter(survey=c).count()
    stored = {
        p.galaxy.objid: p.ml_pred
        for p in Prediction.objects.filter(galaxy__survey=c, model__name="g_morph").select_related("galaxy")
    }
    for row in table:
        if int(row["objid"]) in stored:
            assert float(row["ml_pred"]) == pytest.approx(stored[int(row["objid"])], rel=1e-6)
    call_command("export_catalogue", str(tmp_path / "c.csv"), "--format", "csv", "--survey", "setsC", "--model", "g_morph")
    assert len(Table.read(tmp_path / "c.csv", format="ascii.csv")) == n  # the set applied last, by default
    with pytest.raises(CommandError, match="has not been applied to survey setsC"):
        other = ModelSet.objects.create(name="setsC@0", survey=c, preset="test")
        call_command(
            "export_catalogue",
            str(tmp_path / "x.csv"),
            "--format",
            "csv",
            "--survey",
            "setsC",
            "--model",
            "g_morph",
            "--models",
            other.name,
        )
    client = APIClient()
    page = client.get("/api/galaxies/", {"survey": "setsC", "model": "g_morph", "models": model_set.name, "page_size": 5}).json()
    assert len(page["results"]) == 5 and all("ml_pred" in row for row in page["results"])
    bad = client.get("/api/galaxies/", {"survey": "setsC", "model": "g_morph", "models": "nope@1"})
    assert bad.status_code == 400 and "no model set 'nope@1'" in bad.json()["models"][0]
    listed = client.get("/api/model-sets/").json()["results"]
    assert model_set.name in [s["name"] for s in listed]
    shown = client.get(f"/api/model-sets/{model_set.name}/").json()
    assert shown["named_models"]["g_morph"] == TrainedModel.objects.get(model_set=model_set, name="g_morph").pk
    assert {a["survey"] for a in shown["applied_to"]} >= {"trained", "setsC"}


@pytest.mark.django_db
def test_staff_mark_one_set_current_and_a_survey_name_then_means_it(sets, django_user_model):
    a, model_set = sets["a"], sets["set"]
    newer = ModelSet.objects.create(name="trained@999999", survey=a, preset="test")
    assert resolve_model_set("trained") == newer  # none marked: the newest
    client = APIClient()
    assert client.post(f"/api/model-sets/{model_set.name}/current/").status_code == 401
    staff = django_user_model.objects.create_superuser("boss", "b@example.org", "pw")
    client.force_authenticate(staff)
    answer = client.post(f"/api/model-sets/{model_set.name}/current/")
    assert answer.status_code == 200 and answer.json()["is_current"] is True
    assert resolve_model_set("trained") == model_set
    before = list(Prediction.objects.filter(galaxy__survey=a).order_by("pk").values_list("ml_pred", flat=True))
    mark_current(newer)
    assert ModelSet.objects.filter(survey=a, is_current=True).get() == newer
    assert list(Prediction.objects.filter(galaxy__survey=a).order_by("pk").values_list("ml_pred", flat=True)) == before
    with pytest.raises(ValueError, match="no survey or model set named 'nowhere'"):
        resolve_model_set("nowhere")


@pytest.mark.django_db
def test_a_g_only_survey_without_targets_ingests_refuses_training_and_gets_the_g_models(sets, capsys):
    g, model_set = sets["g"], sets["set"]
    assert Galaxy.objects.filter(survey=g).count() == 60 and not Galaxy.objects.filter(survey=g, ml_g__isnull=False).exists()
    with pytest.raises(ValueError, match="cannot be trained on"):
        start_workflow(g, ["preprocess", "cnn"], preset_name="test")
    with pytest.raises(ValueError, match="cannot be trained on"):
        start_stage("gbm", g, preset_name="test")
    with pytest.raises(ValueError, match="trains nothing: leave out gbm"):
        start_workflow(g, ["features", "gbm"], model_set=model_set)
    call_command("run_pipeline", "--survey", "setsG", "--models", model_set.name, "--json")
    out = capsys.readouterr().out
    assert '"skipped"' in out
    predict = Run.objects.filter(survey=g, stage="predict").latest("created")
    assert predict.status == "succeeded" and predict.config["model_set"] == model_set.pk
    assert set(predict.result["skipped"]) == I_BAND_MODELS
    reasons = predict.result["skipped"]
    assert all(reasons[name] == "survey setsG has no mag_i" for name in I_BAND_MODELS - {"gi_images"})
    assert reasons["gi_images"].startswith("survey setsG has no") and "no i images (CNN4 on colour)" in reasons["gi_images"]
    rows = Prediction.objects.filter(galaxy__survey=g)
    assert set(rows.values_list("model__name", flat=True)) == set(NAMES) - I_BAND_MODELS
    g_morph = rows.filter(model__name="g_morph")
    assert g_morph.count() == 60 and not g_morph.filter(ml_lo68__isnull=True).exists()
    far = g_morph.get(galaxy__objid=sets["far"])
    assert far.out_of_support and any("redshift" in r for r in far.support_reasons)
    # The catalogue shows the g models and explains the i-band ones.
    client = APIClient()
    assert client.get("/api/galaxies/", {"survey": "setsG", "model": "g_morph"}).status_code == 200
    refused = client.get("/api/galaxies/", {"survey": "setsG", "model": "gi_morph"})
    assert refused.status_code == 400 and "has no mag_i" in refused.json()["model"][0]
    page = client.get("/surveys/setsG/").content.decode()
    flagged = Galaxy.objects.filter(survey=g, predictions__out_of_support=True).distinct().count()
    assert f"{flagged} of 60 galaxies</strong> are flagged" in page and "gi_morph skipped: survey setsG has no mag_i" in page


def upload(client: APIClient, bundle: Path, galaxy: Galaxy, **changes):
    fields = {"z": galaxy.z, "mag_g": galaxy.mag_g, "magerr_g": galaxy.magerr_g, "mag_i": galaxy.mag_i, "objid": galaxy.objid}
    fields.update(changes)
    fields = {k: v for k, v in fields.items() if v is not None}
    image = (bundle / "images" / f"{galaxy.objid}_g.fits").read_bytes() if "image" not in fields else fields.pop("image")
    return client.post("/api/predict/", {**fields, "image": io.BytesIO(image)}, format="multipart")


def stored_activations(galaxy: Galaxy, model_set: ModelSet) -> dict[str, np.ndarray]:
    """The galaxy's feature vectors that the features stage stored for ``model_set``'s feature sets."""
    vectors = FeatureVector.objects.filter(galaxy=galaxy, feature_set_id__in=model_set.feature_sets.values())
    return {v.feature_set.name: np.asarray(v.values, dtype=np.float32) for v in vectors.select_related("feature_set")}


class Recorded:
    """``network_activations`` that keeps what it made last."""

    def __init__(self, make):
        self.make, self.made_last = make, {}

    def __call__(self, galaxy, model_set):
        self.made_last = self.make(galaxy, model_set)
        return self.made_last


@pytest.mark.django_db
def test_one_uploaded_galaxy_gets_what_its_catalogue_row_has(sets, django_user_model, monkeypatch):
    """The upload's networks give the stored features to float32 rounding (a batch of one rounds
    otherwise in the last bits), and from the same features the same predictions, to 1e-6."""
    a, bundle, model_set = sets["a"], sets["bundle"], sets["set"]
    client = APIClient()
    galaxy = Galaxy.objects.filter(survey=a, split="test", preprocessed__status="ok").order_by("objid").first()
    assert upload(client, bundle, galaxy).status_code == 401  # anonymous
    client.force_authenticate(django_user_model.objects.create_user("astro", "a@example.org", "pw"))
    made = predict_one.network_activations
    with_i = Galaxy.objects.filter(survey=a, split="test", preprocessed__status="ok", images__band="i", images__status="ok")
    for galaxy in with_i.order_by("objid")[:3]:
        stored = {p.model.name: p for p in Prediction.objects.filter(galaxy=galaxy).select_related("model")}
        kept = stored_activations(galaxy, model_set)
        # The networks on the uploaded cutout: the stored features, to rounding.
        recorded = Recorded(made)
        monkeypatch.setattr(predict_one, "network_activations", recorded)
        answer = upload(client, bundle, galaxy, models=model_set.name)
        assert answer.status_code == 200, answer.content
        # An upload is a g cutout: CNN4 on colour cannot look at it, and gi_images says so.
        assert set(recorded.made_last) == set(kept) - {"cnn4gi.gz2_logits"} and "cnn4gi.gz2_logits" in kept
        assert set(answer.json()["predictions"]) == set(stored) - {"gi_images"} and set(stored) == set(NAMES)
        assert "i-band image" in answer.json()["skipped"]["gi_images"]
        for name, values in recorded.made_last.items():
            np.testing.assert_allclose(values, kept[name], rtol=1e-5, atol=1e-5, err_msg=name)
        # From the stored features, every model answers what the catalogue row holds.
        monkeypatch.setattr(predict_one, "network_activations", lambda *_, kept=kept: kept)
        body = upload(client, bundle, galaxy, models=model_set.name).json()
        assert set(body["predictions"]) == set(stored) and body["skipped"] == {}
        for name, p in stored.items():
            got = body["predictions"][name]
            assert got["ml"] == pytest.approx(p.ml_pred, rel=1e-6), name
            for column in COMPARED[1:]:
                assert got[column.replace("_pred", "")] == pytest.approx(getattr(p, column), rel=1e-6), (name, column)
            assert got["reasons"] == p.support_reasons
        assert body["preprocessing"]["stars_removed"] == galaxy.preprocessed.n_stars_removed
        assert body["preprocessing"]["scaling_value"] == pytest.approx(galaxy.preprocessed.scaling_value)
        assert body["preprocessing"]["scaling_fallback"] is galaxy.preprocessed.scaling_fallback
    monkeypatch.setattr(predict_one, "network_activations", made)
    # g only: the i-band models are skipped, saying why.
    g_only_answer = upload(client, bundle, galaxy, mag_i=None).json()
    assert set(g_only_answer["skipped"]) == I_BAND_MODELS and "mag_i" in g_only_answer["skipped"]["gi"]
    # Bad input: a 400 naming the field.
    not_fits = upload(client, bundle, galaxy, image=b"SIMPLE  = nonsense")
    assert not_fits.status_code == 400 and "not a readable FITS file" in not_fits.json()["image"][0]
    assert "z" in upload(client, bundle, galaxy, z=None).json()
    assert upload(client, bundle, galaxy, z=-1).status_code == 400
    assert "models" in upload(client, bundle, galaxy, models="nope@1").json()
    from astropy.io import fits

    header = fits.getheader(bundle / "images" / f"{galaxy.objid}_g.fits")
    del header["PIXSCALE"]
    buffer = io.BytesIO()
    fits.PrimaryHDU(fits.getdata(bundle / "images" / f"{galaxy.objid}_g.fits"), header).writeto(buffer)
    no_scale = upload(client, bundle, galaxy, image=buffer.getvalue())
    assert no_scale.status_code == 400 and "lacks PIXSCALE" in no_scale.json()["image"][0]
    assert not Galaxy.objects.filter(survey__name="upload").exists()  # nothing stored


@pytest.mark.django_db
def test_uploads_are_throttled_per_user(sets, django_user_model, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    cache.clear()
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1000/minute", "user": "1000/minute", "predict": "2/minute"}
    )
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("busy", "busy@example.org", "pw"))
    galaxy = Galaxy.objects.filter(survey=sets["a"], preprocessed__status="ok").order_by("objid").first()
    statuses = [upload(client, sets["bundle"], galaxy).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def tolerance(level: float, n_test: int, n_calibration: int) -> float:
    """Three standard deviations of a coverage measured on ``n_test`` galaxies with intervals
    calibrated on ``n_calibration``: binomial noise of both (at B's 290 and A's 170
    out-of-fold galaxies, 0.13 at 68% and 0.06 at 95%). Runs are seeded by what they are, so
    the same bundles give the same coverages on every run of the suite, whatever ran before.
    """
    return coverage_tolerance(level, n_test, n_calibration)


@pytest.mark.django_db
def test_intervals_hold_on_a_survey_of_another_seed_and_size_and_the_survey_page_shows_it(sets):
    b, model_set = sets["b"], sets["set"]
    assert sets["applied_b"].status == "succeeded", sets["applied_b"].message
    predict = Run.objects.filter(survey=b, stage="predict").latest("created")
    reports = predict.result["calibration"]
    assert set(reports) == set(NAMES)
    # measured on B's learning sample only: its excluded galaxies' targets are the unreliable ones
    excluded = Galaxy.objects.filter(survey=b, status="excluded", ml_g__isnull=False).count()
    learning = Galaxy.objects.filter(survey=b, status="ok", ml_g__isnull=False).count()
    assert excluded > 0 and reports["g_morph"]["n"] == learning
    for name, report in reports.items():
        model = TrainedModel.objects.get(model_set=model_set, name=name)
        n_calibration = model.metrics["calibration"]["calibrated_on"]["galaxies"]
        assert report["n"] > 250 and report["method"] == "cross-conformal", name
        for level in (0.68, 0.95):
            key = f"coverage_{round(level * 100)}"
            assert abs(report[key] - level) < tolerance(level, report["n"], n_calibration), (name, key, report[key])
        for cls, entry in report["by_class"].items():
            own = model.metrics["calibration"]["calibrated_on"]["own_calibration"].get(cls)
            if entry["n"] >= 50 and own:
                assert abs(entry["coverage_68"] - 0.68) < tolerance(0.68, entry["n"], own), (name, cls, entry)
        assert len(report["by_redshift"]) == len(report["by_luminosity"]) == 4
    page = APIClient().get("/surveys/setsB/").content.decode()
    assert 'id="applied-coverage"' in page and 'id="survey-calibration"' in page
    assert f"Interval calibration of g_morph on this survey ({reports['g_morph']['n']} learning-sample galaxies)" in page
    by_class = page[page.index('id="applied-coverage-by-class"') :].split("</table>")[0]
    disks = max(report["by_class"]["disk"]["n"] for report in reports.values())
    assert f"<th>disk ({disks})</th>" in by_class
    assert f"<td>{reports['gi_morph']['by_class']['disk']['coverage_68']:.3f}</td>" in by_class
    assert f"<td>{reports['g_morph']['coverage_68']:.3f}</td>" in page


@pytest.mark.django_db
@pytest.mark.parametrize("in_database", [True, False])
def test_the_cone_search_names_each_rows_survey_and_carries_its_current_predictions_and_links(sets, monkeypatch, in_database):
    import warnings

    from astropy.io.votable import parse
    from django.test import Client

    from catalogue.services import export

    monkeypatch.setattr(export, "database_formats_rows", lambda: in_database)
    # not the galaxy the three out-of-selection ones were cloned from: they share its position
    clones = Galaxy.objects.filter(survey=sets["c"], objid__in=INJECTED).values_list("ra", "dec")
    predicted = Galaxy.objects.filter(survey=sets["c"], predictions__model__name="g_morph").exclude(
        ra__in=[ra for ra, _ in clones]
    )
    galaxy = predicted.order_by("objid").first()

    def rows(query: str):
        reply = Client().get(f"/scs/?RA={galaxy.ra}&DEC={galaxy.dec}&SR=0.0001&{query}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            document = parse(io.BytesIO(reply.content))
        return document, document.get_first_table().to_table() if document.resources[0].tables else None

    _, everywhere = rows("VERB=2")
    here = everywhere[everywhere["objid"] == galaxy.objid]
    # the same objid in several surveys (A, its copy C, perhaps G), one row each, told apart
    assert len(here) == len(set(here["survey"])) and {"trained", "setsC"} <= set(here["survey"])
    document, mine = rows("VERB=2&SURVEY=setsC")
    assert list(mine["survey"]) == ["setsC"] and mine["ml_model_set"][0] == sets["set"].name
    # The catalogue's M/L: the galaxy's best-validated model of the set applied to its survey, as the API's.
    api = APIClient().get(f"/api/galaxies/{galaxy.objid}/?survey=setsC").json()["catalogue_ml"]
    assert mine["ml_model"][0] == api["ml_model"]
    stored = Prediction.objects.get(galaxy=galaxy, model__name=api["ml_model"], model__model_set=sets["set"])
    assert mine["ml"][0] == pytest.approx(stored.ml_pred) and mine["ml_hi68"][0] == pytest.approx(stored.ml_hi68)
    assert mine["mstar"][0] == pytest.approx(stored.mstar_pred) and mine["out_of_support"][0] == int(stored.out_of_support)
    assert mine["galaxy_url"][0].endswith(f"/galaxies/{galaxy.pk}/")
    # the cutout link is the app's own download (media files are not served by the app)
    assert mine["cutout_g_url"][0].endswith(f"/galaxies/{galaxy.pk}/g.fits")
    cutout = Client().get(f"/galaxies/{galaxy.pk}/g.fits")
    assert cutout.status_code == 200 and b"".join(cutout.streaming_content).startswith(b"SIMPLE")
    fields = {f.name: f for f in document.get_first_table().fields}
    assert fields["ml"].ucd == "phys.composition.massLightRatio;em.opt.B;meta.main" and fields["mstar"].unit == "solMass"
    assert fields["survey"].ucd == "meta.dataset" and fields["galaxy_url"].ucd == "meta.ref.url"
    assert "best-validated" in " ".join(fields["ml_model"].description.split())
    assert Client().get(f"/galaxies/{galaxy.pk}/").status_code == 200
    error, _ = rows("SURVEY=nowhere")
    assert [(i.name, i.value) for i in error.resources[0].infos] == [("Error", "SURVEY='nowhere': no survey of that name")]


@pytest.mark.django_db
def test_the_cone_search_is_throttled_like_the_api(sets, monkeypatch):  # noqa: ARG001 - the surveys it searches
    from django.core.cache import cache
    from django.test import Client
    from rest_framework.throttling import SimpleRateThrottle

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "1000/minute", "predict": "9/minute"})
    replies = [Client().get("/scs/?RA=150&DEC=2&SR=0.1&VERB=1") for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert (
        int(replies[-1]["Retry-After"]) > 0
        and b'name="Error"' in replies[-1].content
        and b"too many requests" in replies[-1].content
    )


@pytest.mark.django_db
def test_each_survey_has_its_footprint_as_an_ivoa_moc(sets, tmp_path):
    import astropy.units as u
    from django.test import Client
    from mocpy import MOC

    reply = Client().get("/surveys/setsG/moc.fits")
    assert reply.status_code == 200 and reply["Content-Type"] == "application/fits"
    (tmp_path / "g.fits").write_bytes(reply.content)
    moc = MOC.from_fits(tmp_path / "g.fits")
    galaxies = Galaxy.objects.filter(survey=sets["g"])
    ra, dec = np.array(galaxies.values_list("ra", "dec"), dtype=float).T
    assert moc.contains_lonlat(ra * u.deg, dec * u.deg).all()
    assert not moc.contains_lonlat(np.array([(ra[0] + 180) % 360]) * u.deg, np.array([-dec[0]]) * u.deg).any()
    assert moc.max_order == 10 and 0 < moc.sky_fraction < 1e-3
    coarse = Client().get("/surveys/setsG/moc.fits", {"order": "4"})
    (tmp_path / "c.fits").write_bytes(coarse.content)
    assert MOC.from_fits(tmp_path / "c.fits").sky_fraction >= moc.sky_fraction
    assert Client().get("/surveys/setsG/moc.fits", {"order": "99"}).status_code == 400
    assert Client().get("/surveys/nowhere/moc.fits").status_code == 404
    assert 'href="/surveys/setsG/moc.fits"' in Client().get("/surveys/setsG/").content.decode()


@pytest.mark.django_db
def test_a_bad_token_on_the_cone_search_gets_an_error_votable(sets):  # noqa: ARG001 - the surveys it searches
    from django.test import Client

    reply = Client().get("/scs/?RA=150&DEC=2&SR=0.1", HTTP_AUTHORIZATION="Token not-a-token")
    assert reply.status_code == 401 and reply["Content-Type"].startswith("text/xml")
    assert b'name="Error"' in reply.content and b"Invalid token" in reply.content


@pytest.mark.django_db
def test_staff_apply_a_set_through_the_api_and_the_admin(sets, django_user_model):
    g, model_set = sets["g"], sets["set"]
    staff = django_user_model.objects.create_superuser("applier", "applier@example.org", "pw")
    client = APIClient()
    assert client.post("/api/runs/", {"survey": "setsG", "models": model_set.name}, format="json").status_code == 401
    client.force_authenticate(staff)
    started = client.post("/api/runs/", {"survey": "setsG", "models": model_set.name}, format="json")
    assert started.status_code == 201, started.content
    workflow = Run.objects.get(pk=started.json()["id"])
    assert workflow.stage == "workflow" and workflow.config["model_set"] == model_set.pk
    assert workflow.config["stages"] == list(apply_stages()) and workflow.preset == model_set.preset
    trains = client.post("/api/runs/", {"survey": "setsG", "models": model_set.name, "stages": ["gbm"]}, format="json")
    assert trains.status_code == 400 and "trains nothing" in trains.json()["detail"]
    unknown = client.post("/api/runs/", {"survey": "setsG", "models": "nope@1"}, format="json")
    assert unknown.status_code == 400 and "no model set 'nope@1'" in unknown.json()["models"][0]
    # The admin's start form: the survey and the set, no stage ticked.
    browser = Client()
    browser.force_login(staff)
    form = browser.get(f"/admin/catalogue/run/start/?survey={g.pk}")
    assert form.status_code == 200 and "apply model set" in form.content.decode()
    before = set(Run.objects.filter(survey=g, stage="workflow").values_list("pk", flat=True))
    answer = browser.post("/admin/catalogue/run/start/", {"survey": g.pk, "models": model_set.name, "preset": "test"})
    assert answer.status_code == 302
    (applied,) = Run.objects.filter(survey=g, stage="workflow").exclude(pk__in=before)
    assert applied.config["model_set"] == model_set.pk and answer["Location"].endswith(f"/runs/{applied.pk}/")
    refused = browser.post("/admin/catalogue/run/start/", {"survey": g.pk, "preset": "test"})
    assert "tick at least one stage, or choose a model set" in refused.content.decode()


@pytest.mark.django_db
def test_the_transfer_benchmark_reports_stored_intervals_and_the_split_conformal_ones_on_the_same_galaxies(sets):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "transfer.py"
    spec = importlib.util.spec_from_file_location("transfer", path)
    transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transfer)
    stored = transfer.stored_report(sets["b"], sets["set"])
    before = transfer.split_conformal_report(sets["b"], sets["set"])
    assert set(stored) == set(before) == set(NAMES)
    learning = Galaxy.objects.filter(survey=sets["b"], status="ok", ml_g__isnull=False).count()
    for name in NAMES:
        assert 250 < stored[name]["n"] == before[name]["n"] <= learning, name
        assert before[name]["method"] == ("cqr" if name not in ("constant", "powerlaw_gi") else "residual"), name
        for report in (stored[name], before[name]):
            assert len(report["by_redshift"]) == len(report["by_luminosity"]) == 4
            assert sum(entry["n"] for entry in report["by_class"].values()) == report["n"]
            assert 0 < report["width_68_dex"] < report["width_95_dex"]


@pytest.mark.django_db
def test_a_shallow_images_scaling_fallback_reaches_the_exports_and_the_api(sets, tmp_path):
    """The injected galaxy whose g image is pure sky noise has no scaling value at the target noise
    level: it is preprocessed with the closest one and flagged, and the flag travels with its row."""
    from catalogue.models import Preprocessed

    c = sets["c"]
    noise_objid = next(objid for objid, kind in INJECTED.items() if kind == "features")
    flagged = set(Preprocessed.objects.filter(galaxy__survey=c, scaling_fallback=True).values_list("galaxy__objid", flat=True))
    assert noise_objid in flagged and len(flagged) <= 0.05 * Galaxy.objects.filter(survey=c).count()
    assert Preprocessed.objects.get(galaxy__survey=c, galaxy__objid=noise_objid).status == "ok"
    for fmt, name in (("fits", "c.fits"), ("csv", "c.csv"), ("votable", "c.xml")):
        export_catalogue(tmp_path / name, fmt, c)
        table = Table.read(tmp_path / name, **({"format": "ascii.csv"} if fmt == "csv" else {}))
        column = {int(o): v for o, v in zip(table["objid"], table["scaling_fallback"], strict=True)}
        assert {o for o, v in column.items() if v == 1} == flagged, fmt
        assert column[noise_objid] == 1
    assert "too shallow" in Table.read(tmp_path / "c.fits")["scaling_fallback"].description
    rows = APIClient().get("/api/galaxies/", {"survey": "setsC", "page_size": 1000}).json()["results"]
    by_objid = {row["objid"]: row["catalogue_ml"] for row in rows}
    assert by_objid[noise_objid]["scaling_fallback"] == 1
    assert {o for o, cat in by_objid.items() if cat and cat["scaling_fallback"]} == flagged


@pytest.mark.django_db
def test_a_set_adapted_to_another_surveys_targets_is_measured_on_galaxies_it_never_saw(sets, django_user_model, capsys):
    """--adapt: too few targets are refused with the number needed; the API starts an adaptation; the
    adapted set names its source and its targets, its figures are on galaxies it was neither fitted nor
    calibrated on, it predicts the survey's catalogue, and it applies to a third survey like any set."""
    from catalogue.selectors import adapted_set_of_workflow, catalogue_candidates
    from catalogue.services.artifacts import load_pickle
    from pipeline.learning.adapt import MIN_TARGETS
    from pipeline.learning.metrics import l1_per_galaxy

    b, c, g, model_set = sets["b"], sets["c"], sets["g"], sets["set"]
    with pytest.raises(ValueError, match=f"adapting needs at least {MIN_TARGETS} targets"):
        start(b, model_set=model_set, adapt=True, targets=MIN_TARGETS - 1)
    with pytest.raises(ValueError, match=rf"survey setsG has 0 galaxies with M/L targets .* needs at least {MIN_TARGETS}"):
        start(g, model_set=model_set, adapt=True)
    with pytest.raises(CommandError, match=f"at least {MIN_TARGETS}"):
        call_command("run_pipeline", "--survey", "setsB", "--models", model_set.name, "--adapt", "--targets", "20")
    with pytest.raises(CommandError, match="adapting needs the model set"):
        call_command("run_pipeline", "--survey", "setsB", "--adapt")
    staff = django_user_model.objects.create_superuser("adapter", "adapter@example.org", "pw")
    client = APIClient()
    client.force_authenticate(staff)
    refused = client.post("/api/runs/", {"survey": "setsB", "models": model_set.name, "adapt": True, "targets": 5}, format="json")
    assert refused.status_code == 400 and f"at least {MIN_TARGETS}" in refused.json()["detail"]
    browser = Client()
    browser.force_login(staff)
    form = browser.get(f"/admin/catalogue/run/start/?survey={b.pk}").content.decode()
    assert "adapt it to the survey" in form and 'name="targets"' in form
    admin_refused = browser.post(
        "/admin/catalogue/run/start/", {"survey": b.pk, "models": model_set.name, "adapt": "on", "targets": 7, "preset": "test"}
    )
    assert admin_refused.status_code == 200 and f"at least {MIN_TARGETS}" in admin_refused.content.decode()
    started = client.post(
        "/api/runs/", {"survey": "setsB", "models": model_set.name, "adapt": True, "targets": 120}, format="json"
    )
    assert started.status_code == 201, started.content
    workflow = Run.objects.get(pk=started.json()["id"])
    assert workflow.status == "succeeded", workflow.error or workflow.message
    assert workflow.config["stages"] == ["preprocess", "features", "adapt", "predict"]
    adapted = adapted_set_of_workflow(workflow)
    assert adapted.name == f"setsB@{workflow.children.get(stage='adapt').pk}" and adapted.survey == b
    assert adapted.lineage["adapted_from"] == model_set.name and adapted.lineage["targets"]["adaptation"] == 120
    assert set(adapted.networks.all()) == set(model_set.networks.all())

    learning = Galaxy.objects.filter(survey=b, status="ok", ml_g__isnull=False).exclude(split="")
    test_ids = set(learning.filter(split="test").values_list("pk", flat=True))
    pool_ids = set(learning.filter(split__in=["train", "val"]).values_list("pk", flat=True))
    for model in adapted.named_models.all():
        fitted = load_pickle(model.artifact.name)
        seen = set(fitted.adaptation.galaxy_ids.tolist())
        assert len(seen) == 120 and seen <= pool_ids and not seen & test_ids, model.name  # never the test split
        assert set(fitted.oof["galaxy_ids"].tolist()) == seen  # calibrated on the same galaxies, out of fold
        held_out = model.metrics["held_out"]["galaxies"]
        assert held_out == len(learning) - 120 and model.metrics["test"]["n"] == held_out, model.name
        assert model.metrics["adaptation"]["method"] in ("as_is", "scale", "boost")
        # The stored figure is the stored predictions' on exactly the galaxies it did not see.
        rows = Prediction.objects.filter(model=model, galaxy__in=learning).exclude(galaxy_id__in=seen)
        values = rows.values_list("ml_pred", "galaxy__ml_g", "galaxy__ml_g_err")
        p, t, e = (np.array(v, dtype=float) for v in zip(*values, strict=True))
        assert len(p) == held_out and np.mean(l1_per_galaxy(p, t, e)) == pytest.approx(model.metrics["test"]["l1"], rel=1e-6)
        as_is = model.metrics["as_is"]["test"]
        assert as_is["n"] == held_out and as_is["l1"] > 0
    assert {c.model_set for c in catalogue_candidates(b)} == {adapted.name}  # the survey's catalogue is the adapted set's
    assert adapted.metrics["g_morph"]["as_is"]["test"]["l1"] > 0 and adapted.metrics["g_morph"]["method"]
    page = Client().get("/models/sets/", {"set": [model_set.name, adapted.name]}).content.decode()
    assert f"{model_set.name} · 120 · {adapted.lineage['targets']['held_out']}" in page and "as it is: test L1" in page
    call_command("run_pipeline", "--attach", str(workflow.pk))
    assert f"adapted set {adapted.name} (from {model_set.name} on 120 targets" in capsys.readouterr().out

    third = start(c, model_set=adapted)  # a third survey: an adapted set applies like any set
    assert third.status == "succeeded", third.error or third.message
    assert Prediction.objects.filter(galaxy__survey=c, model__model_set=adapted).count() >= 0.9 * Galaxy.objects.filter(
        survey=c
    ).count() * len(adapted.named_models.all())
    assert {c.model_set for c in catalogue_candidates(c)} == {adapted.name}
