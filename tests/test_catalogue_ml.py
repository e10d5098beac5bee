"""The catalogue's M/L per galaxy: the best-validated model of the applied set whose inputs the galaxy has."""

from __future__ import annotations

import io

import pytest
from astropy.table import Table
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from catalogue.models import Galaxy, ModelSet, Prediction, Preprocessed, Run, Survey, TrainedModel
from catalogue.selectors.catalogue_ml import catalogue_candidates, catalogue_ml_columns, choose_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> APIClient:
    return APIClient()


#: Validation L1 of each named model, as a trained set ranks them (gi_images best, constant worst).
VAL_L1 = {"gi_images": 1.0, "gi_morph": 1.2, "g_morph": 1.8, "gi": 2.0, "powerlaw_gi": 2.3, "lgz": 2.9, "constant": 4.0}


def applied_set(survey: Survey, *, skipped: tuple[str, ...] = (), val_l1: dict | None = None) -> dict[str, TrainedModel]:
    """A model set trained on ``survey`` and applied to it (a succeeded predict run naming it)."""
    gbm = Run.objects.create(stage="gbm", survey=survey, status="succeeded", finished=timezone.now())
    model_set = ModelSet.objects.create(name=f"{survey.name}@{gbm.pk}", survey=survey, run=gbm, is_current=True)
    models = {
        name: TrainedModel.objects.create(
            kind="gbm", name=name, survey=survey, run=gbm, model_set=model_set, metrics={"val": {"l1": l1}}
        )
        for name, l1 in (val_l1 or VAL_L1).items()
    }
    Run.objects.create(
        stage="predict",
        survey=survey,
        status="succeeded",
        finished=timezone.now(),
        config={"model_set": model_set.pk, "models": {name: m.pk for name, m in models.items()}},
        result={"skipped": {name: "survey has no i images" for name in skipped}},
    )
    return models


def galaxy(survey: Survey, objid: int, *, mag_i: float | None, image: bool, i_image: bool = False) -> Galaxy:
    found = Galaxy.objects.create(
        survey=survey, objid=objid, ra=150.0 + objid / 100, dec=2.0, z=0.05, mag_g=16.0, mag_i=mag_i, lum_g=1e10
    )
    if image:
        Preprocessed.objects.create(galaxy=found, status="ok", scaling_value=3.0, i_band="ok" if i_image else "")
    return found


def predict(models: dict[str, TrainedModel], target: Galaxy, names, flagged: tuple[str, ...] = ()) -> None:
    """Every named model's prediction of the galaxy, as the predict stage stores them (a GBM predicts from
    missing inputs too), each with an M/L that says which model made it."""
    for name in names:
        i = list(VAL_L1).index(name)
        Prediction.objects.create(
            galaxy=target,
            model=models[name],
            ml_pred=1.0 + i / 10,
            mstar_pred=1e10 * (1.0 + i / 10),
            ml_lo68=0.9 + i / 10,
            ml_hi68=1.1 + i / 10,
            out_of_support=name in flagged,
            support_reasons=["redshift above the training range"] if name in flagged else [],
        )


def with_catalogue_ml(queryset, surveys) -> list[dict]:
    """The catalogue's columns of each galaxy, with its objid and survey."""
    columns = catalogue_ml_columns(surveys)
    return [{"objid": g.objid, "survey_id": g.survey_id, "pk": g.pk, **columns.values(g)} for g in columns.annotate(queryset)]


#: The model each galaxy of :func:`mixed` gets, by objid.
MIXED_CHOICE = {1: "gi_images", 2: "gi_morph", 3: "g_morph", 4: "gi", 5: "lgz"}


@pytest.fixture
def mixed() -> tuple[Survey, dict[str, TrainedModel]]:
    return mixed_survey()


def mixed_survey() -> tuple[Survey, dict[str, TrainedModel]]:
    """Five galaxies with fewer inputs each, every one predicted by each model it can be (g_morph flags them)."""
    survey = Survey.objects.create(name="mixed")
    models = applied_set(survey)
    everything = galaxy(survey, 1, mag_i=15.0, image=True, i_image=True)
    no_i_image = galaxy(survey, 2, mag_i=15.0, image=True)
    no_i_flux = galaxy(survey, 3, mag_i=None, image=True)
    no_image = galaxy(survey, 4, mag_i=15.0, image=False)
    nothing_but_g = galaxy(survey, 5, mag_i=None, image=False)
    for target in (everything, no_i_flux, no_image, nothing_but_g):
        predict(models, target, list(models), flagged=("g_morph",))
    predict(models, no_i_image, [n for n in models if n != "gi_images"])  # gi_images predicts only i-imaged galaxies
    return survey, models


def test_each_galaxy_gets_the_best_validated_model_it_has_the_inputs_of(mixed):
    survey, models = mixed

    rows = {g["objid"]: g for g in with_catalogue_ml(Galaxy.objects.filter(survey=survey), [survey])}
    chosen = {objid: row["ml_model"] for objid, row in rows.items()}
    assert chosen == MIXED_CHOICE
    # The row's values are the chosen model's prediction, its flag and its set.
    for objid, row in rows.items():
        prediction = Prediction.objects.get(galaxy_id=row["pk"], model=models[row["ml_model"]])
        assert (row["ml"], row["mstar"], row["ml_lo68"], row["ml_hi68"]) == (
            prediction.ml_pred,
            prediction.mstar_pred,
            prediction.ml_lo68,
            prediction.ml_hi68,
        ), objid
        assert row["ml_model_set"] == models["gi"].model_set.name
    assert rows[3]["out_of_support"] == 1 and rows[3]["support_reasons"] == ["redshift above the training range"]
    assert rows[1]["out_of_support"] == 0 and rows[1]["support_reasons"] == []
    # The Python rule says the same for each galaxy.
    candidates = catalogue_candidates(survey)
    assert [c.name for c in candidates] == sorted(VAL_L1, key=VAL_L1.get)
    assert choose_model(candidates, {"mag_i"}, set(VAL_L1)).name == "gi"
    assert choose_model(candidates, set(), set(VAL_L1)).name == "lgz"


def test_the_ranking_is_by_validation_l1_not_by_a_fixed_order_and_skipped_models_are_left_out():
    survey = Survey.objects.create(name="lgz-wins")
    worse_morph = {**VAL_L1, "g_morph": 3.5, "gi_morph": 3.6, "gi": 3.7}
    models = applied_set(survey, val_l1=worse_morph, skipped=("gi_images",))
    target = galaxy(survey, 1, mag_i=15.0, image=True, i_image=True)
    predict(models, target, [n for n in models if n != "gi_images"])
    [row] = with_catalogue_ml(Galaxy.objects.filter(survey=survey), [survey])
    assert row["ml_model"] == "powerlaw_gi"  # 2.3: better than every morphology model here
    assert "gi_images" not in [c.name for c in catalogue_candidates(survey)]


def test_a_survey_without_an_applied_set_has_empty_columns_and_others_keep_theirs():
    predicted, bare = Survey.objects.create(name="predicted"), Survey.objects.create(name="bare")
    models = applied_set(predicted)
    one = galaxy(predicted, 1, mag_i=None, image=False)
    predict(models, one, list(models))
    galaxy(bare, 1, mag_i=15.0, image=True)
    rows = with_catalogue_ml(Galaxy.objects.order_by("survey__name"), [predicted, bare])
    assert [(r["survey_id"], r["ml_model"]) for r in rows] == [(bare.pk, None), (predicted.pk, "lgz")]
    assert with_catalogue_ml(Galaxy.objects.filter(survey=bare), [bare])[0]["ml"] is None
    assert catalogue_candidates(bare) == []
    said = APIClient().get("/api/surveys/bare/").json()  # the API says so
    assert said["model_set"] is None and said["n_predicted"] == 0


def test_the_api_lists_and_details_lead_with_the_catalogue_ml_and_filter_on_it(mixed, client):
    survey, models = mixed
    rows = client.get("/api/galaxies/?survey=mixed").json()["results"]
    assert {r["objid"]: r["catalogue_ml"]["ml_model"] for r in rows} == MIXED_CHOICE
    first = next(r for r in rows if r["objid"] == 3)["catalogue_ml"]
    stored = Prediction.objects.get(galaxy__objid=3, galaxy__survey=survey, model=models["g_morph"])
    assert first["ml"] == stored.ml_pred and first["mstar"] == stored.mstar_pred and first["ml_lo68"] == stored.ml_lo68
    assert first["out_of_support"] is True and first["support_reasons"] == ["redshift above the training range"]
    assert first["ml_model_set"] == models["gi"].model_set.name
    detail = client.get("/api/galaxies/3/?survey=mixed").json()
    assert detail["catalogue_ml"] == first and detail["units"]["ml"] == "solMass/solLum"
    # Filters read the catalogue's values; catalogue_ml=false leaves them out; model= adds one model's.
    flagged = client.get("/api/galaxies/?survey=mixed&flagged=true").json()["results"]
    assert [r["objid"] for r in flagged] == [3]
    assert {r["objid"] for r in client.get("/api/galaxies/?survey=mixed&ml_pred_min=1.35").json()["results"]} == {
        objid for objid in MIXED_CHOICE if list(models).index(MIXED_CHOICE[objid]) / 10 + 1.0 >= 1.35
    }
    bare = client.get("/api/galaxies/?survey=mixed&catalogue_ml=false").json()["results"]
    assert bare and all("catalogue_ml" not in r for r in bare)
    with_model = client.get("/api/galaxies/?survey=mixed&model=lgz").json()["results"]
    assert with_model and all(r["ml_pred"] is not None and "catalogue_ml" not in r for r in with_model)  # that model's
    described = client.get("/api/surveys/mixed/").json()
    assert described["model_set"] == models["gi"].model_set.name and described["n_predicted"] == len(MIXED_CHOICE)
    schema = client.get("/api/schema/?format=json").json()["components"]["schemas"]["Galaxy"]["properties"]
    assert "solMass/solLum" in schema["catalogue_ml"]["properties"]["ml"]["description"]


@pytest.mark.parametrize("fmt", ["votable", "fits", "csv"])
@pytest.mark.usefixtures("mixed")
def test_downloads_and_export_catalogue_carry_the_catalogue_ml_with_units(client, tmp_path, fmt):
    call_command("export_catalogue", str(tmp_path / f"c.{fmt}"), "--format", fmt, "--survey", "mixed")
    exported = Table.read(tmp_path / f"c.{fmt}", format={"csv": "ascii.csv"}.get(fmt, fmt))
    downloaded = Table.read(
        io.BytesIO(b"".join(client.get(f"/api/catalogue.{fmt}?survey=mixed").streaming_content)),
        format={"csv": "ascii.csv"}.get(fmt, fmt),
    )
    for table in (exported, downloaded):
        assert {int(row["objid"]): str(row["ml_model"]) for row in table} == MIXED_CHOICE
        if fmt != "csv":
            assert table["ml"].unit.to_string() == "solMass / solLum" and str(table["mstar"].unit) == "solMass"
        assert list(table["out_of_support"][table["objid"] == 3]) == [1]
    # --model puts one named model's columns in their place, as before.
    call_command("export_catalogue", str(tmp_path / "lgz.csv"), "--format", "csv", "--survey", "mixed", "--model", "lgz")
    assert "ml_pred" in Table.read(tmp_path / "lgz.csv", format="ascii.csv").colnames


@pytest.mark.usefixtures("mixed")
def test_the_catalogue_page_leads_with_the_catalogue_ml_sorts_and_filters_by_it():
    from django.test import Client

    page = Client()
    html = page.get("/catalogue/?survey=mixed&ordering=-ml").content.decode()
    assert "M/L" in html and "[solMass/solLum]" in html and "<td>ok</td>" not in html
    cell = '<td data-column="ml_model">{}</td>'.format
    order = [name for name in ("gi_images", "gi_morph", "g_morph", "gi", "lgz") if cell(name) in html]
    assert len(order) == 5
    positions = {name: html.index(cell(name)) for name in order}
    # Descending M/L: the model with the largest stored value first (values grow with the model's place in VAL_L1).
    by_value = sorted(positions, key=lambda name: -list(VAL_L1).index(name))
    assert sorted(positions, key=positions.get) == by_value
    flagged = page.get("/catalogue/?survey=mixed&flagged=true").content.decode()
    assert cell("g_morph") in flagged and cell("lgz") not in flagged
    assert '<td data-column="out_of_support" title="redshift above the training range">flagged</td>' in flagged
    bare = Survey.objects.create(name="bare")
    galaxy(bare, 1, mag_i=None, image=False)
    assert "has no predictions yet" in page.get("/catalogue/?survey=bare").content.decode()
