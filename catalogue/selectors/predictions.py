"""Trained models and their predictions: the latest named models, the model whose predictions
a page or a download shows, a galaxy's predictions, a model's test split.

The catalogue's M/L of each galaxy (which model's prediction a row leads with) is
:mod:`catalogue.selectors.catalogue_ml`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce

from catalogue.models import ExperimentResult, FeatureSet, Galaxy, GalaxyStatus, Prediction, Split, Survey, TrainedModel
from catalogue.selectors.features import feature_matrix
from catalogue.selectors.model_sets import applications, applied_model_set
from catalogue.selectors.runs import latest_product_run
from pipeline import gz2
from pipeline.learning.named_models import CATALOGUE_MODEL, NAMED_MODEL_NAMES, REQUIRED_MODEL_NAMES


def latest_named_models(survey: Survey) -> dict[str, TrainedModel]:
    """The named M/L models of the survey's latest successful gbm run.

    Raises
    ------
    ValueError
        when no gbm run with every named model has finished on the survey.
    """
    run = latest_product_run(survey, "named_models")
    found = {m.name: m for m in TrainedModel.objects.filter(run=run, name__in=NAMED_MODEL_NAMES)} if run else {}
    if not set(REQUIRED_MODEL_NAMES) <= set(found):
        raise ValueError(f"survey {survey.name} has no trained M/L models yet; run the gbm stage first")
    return found


def latest_named_model(survey: Survey, name: str) -> TrainedModel | None:
    """The survey's model called ``name`` from its latest successful run of the stage that makes named models."""
    run = latest_product_run(survey, "named_models")
    return TrainedModel.objects.filter(run=run, name=name).first() if run else None


def model_by_id(pk: int) -> TrainedModel | None:
    """A trained model with its survey and run, or None."""
    return TrainedModel.objects.select_related("survey", "run").filter(pk=pk).first()


def survey_models(survey: Survey, limit: int = 30) -> list[TrainedModel]:
    """The survey's trained models, newest first."""
    return list(TrainedModel.objects.filter(survey=survey).order_by("-created", "-pk")[:limit])


def recent_regressors(limit: int = 12) -> list[TrainedModel]:
    """The newest M/L models (GBMs and baselines) of every survey."""
    kinds = [TrainedModel.Kind.GBM, TrainedModel.Kind.BASELINE]
    return list(TrainedModel.objects.filter(kind__in=kinds).select_related("survey").order_by("-created", "-pk")[:limit])


def models_with_prediction_counts() -> QuerySet[TrainedModel]:
    """Every trained model, newest first, with how many galaxies of the public catalogue it predicted (the API's list).

    A prediction job's galaxies are subtracted by a subquery that starts from the (few) private
    surveys, so the count over every prediction keeps its plan.
    """
    private = (
        Prediction.objects.filter(model=OuterRef("pk"), galaxy__survey__owner__isnull=False)
        .order_by()
        .values("model")
        .annotate(n=Count("pk"))
        .values("n")
    )
    counted = TrainedModel.objects.select_related("survey").annotate(
        n_predictions=Count("predictions") - Coalesce(Subquery(private, output_field=IntegerField()), 0)
    )
    return counted.order_by("-created")


def experiment_results() -> QuerySet[ExperimentResult]:
    """Every experiment row with its survey, by experiment (the API's list)."""
    return ExperimentResult.objects.select_related("survey").order_by("experiment", "id")


def experiment_rows(run) -> list[ExperimentResult]:
    """The rows an experiments run stored, in the order it stored them (none without a run)."""
    return list(ExperimentResult.objects.filter(run=run).order_by("id")) if run is not None else []


def flagged_counts(survey: Survey, model_set) -> tuple[dict[str, int], int]:
    """Galaxies of the survey each model of the set flags as out of its selection, and how many any of them flags."""
    flagged = Prediction.objects.filter(model__model_set=model_set, galaxy__survey=survey, out_of_support=True)
    per_model = dict(flagged.values_list("model__name").annotate(n=Count("id")))
    return per_model, flagged.values("galaxy_id").distinct().count()


def prediction_model(survey: Survey | None, name: str, model_set=None) -> TrainedModel:
    """The model called ``name`` whose predictions of the survey's galaxies to show (or the model with that id).

    By name, the model belongs to ``model_set`` when given, else to the set applied to the
    survey last (its newest successful predict run's); a survey predicted before sets
    existed falls back to its own newest model of that name.

    Raises
    ------
    ValueError
        without a survey (for a name), without such a model, or when it has no predictions
        of the survey yet (the message says how to make them).
    """
    name = str(name)
    with_predictions = TrainedModel.objects.annotate(predicted=Exists(Prediction.objects.filter(model=OuterRef("pk"))))
    if name.isdigit():
        model = with_predictions.filter(pk=int(name)).first()
        if model is None:
            raise ValueError(f"no model with id {name}")
    elif survey is None:
        raise ValueError("predictions belong to one survey's model: give the survey as well as the model name")
    else:
        if model_set is not None:
            application = applications(survey, model_set).first()
            if application is None:
                raise ValueError(
                    f"model set {model_set.name} has not been applied to survey {survey.name}; apply it: "
                    f"run_pipeline --survey {survey.name} --models {model_set.name}"
                )
        else:
            applied = applied_model_set(survey)
            model_set, application = applied if applied else (None, None)
        if model_set is not None:
            skipped = application.result.get("skipped", {})
            if name in skipped:
                raise ValueError(f"model set {model_set.name} did not predict {name} for survey {survey.name}: {skipped[name]}")
            model = with_predictions.filter(model_set=model_set, name=name).first()
            if model is None:
                names = sorted(model_set.named_models.values_list("name", flat=True))
                raise ValueError(f"model set {model_set.name} has no model named {name!r}; it has: {', '.join(names)}")
        else:
            model = with_predictions.filter(survey=survey, name=name).order_by("-created", "-pk").first()
        if model is None:
            names = sorted(set(TrainedModel.objects.filter(survey=survey).values_list("name", flat=True)))
            raise ValueError(f"survey {survey.name} has no model named {name!r}; it has: {', '.join(names) or 'none'}")
    if not model.predicted:
        raise ValueError(f"model {model.name} #{model.pk} has no predictions yet; run the predict stage")
    return model


def galaxy_predictions(galaxy: Galaxy) -> QuerySet[Prediction]:
    """Every prediction of a galaxy, newest model first."""
    return Prediction.objects.filter(galaxy=galaxy).select_related("model", "galaxy").order_by("-model__created", "-pk")


def latest_prediction_per_model(galaxy: Galaxy) -> dict[str, Prediction]:
    """A galaxy's prediction by its newest model of each name, by model name."""
    latest: dict[str, Prediction] = {}
    for prediction in galaxy_predictions(galaxy).order_by("model__name", "-model__created", "-pk"):
        latest.setdefault(prediction.model.name, prediction)
    return latest


def test_split_predictions(model: TrainedModel) -> dict[str, np.ndarray]:
    """The model's predictions of its training survey's test split with each galaxy's target, error
    (Msun/Lsun_g), g luminosity (Lsun_g), redshift, morphology class and CNN1's P(features):
    Figs. 4-7. Surveys the model was applied to are not its test split, even with targets."""
    rows = list(
        Prediction.objects.filter(
            model=model,
            galaxy__survey_id=model.survey_id,
            galaxy__split=Split.TEST,
            galaxy__status=GalaxyStatus.OK,
            galaxy__ml_g__isnull=False,
        ).values_list(
            "galaxy_id", "ml_pred", "galaxy__ml_g", "galaxy__ml_g_err", "galaxy__lum_g", "galaxy__z", "galaxy__morphology"
        )
    )
    ids = [r[0] for r in rows]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
    names = ["id", "predicted", "target", "error", "lum_g", "z"]
    out = {name: np.asarray(columns[i], dtype=float) for i, name in enumerate(names)}
    out["morphology"] = np.asarray(columns[6], dtype=object)
    out["p_features"] = np.full(len(ids), np.nan)
    set_id = (model.hyperparameters or {}).get("feature_sets", {}).get("cnn1.gz2")
    feature_set = FeatureSet.objects.filter(pk=set_id).first() if set_id else None
    if feature_set is not None and ids:
        probabilities, _ = feature_matrix([feature_set], ids, drop=False)
        out["p_features"] = probabilities[:, gz2.ANSWER_INDEX["a02"]]
    return out


@dataclass
class ApplicationReport:
    """Which set predicted a survey's catalogue, what each model flags, what it skipped, how its intervals held."""

    model_set: object
    run: object
    foreign: bool  # trained on another survey
    flagged: list[tuple[str, int]]  # (model, galaxies flagged out of its selection)
    any_flagged: int
    skipped: list[tuple[str, str]]  # (model, why)
    coverage: list[tuple]  # (model, galaxies, 68% coverage, 95% coverage, median 68% width in dex)
    classes: list[tuple[str, int]]  # (morphology class, its galaxies)
    coverage_by_class: list[tuple[str, list]]  # (model, 68% coverage per class)
    catalogue_calibration: dict = field(default_factory=dict)  # the catalogue model's report, for its figure
    coverage_figure: str = ""  # the page draws it


def application_report(survey: Survey) -> ApplicationReport | None:
    """The report of the set applied to the survey last, from its prediction run's result; None before any."""
    applied = applied_model_set(survey)
    if applied is None:
        return None
    model_set, run = applied
    per_model, any_flagged = flagged_counts(survey, model_set)
    skipped = run.result.get("skipped", {})
    predicted = [name for name in run.config.get("models", {}) if name not in skipped]
    reports = {name: report for name, report in (run.result.get("calibration") or {}).items() if report}
    classes = list(dict.fromkeys(c for report in reports.values() for c in report.get("by_class", {}) if c))
    return ApplicationReport(
        model_set=model_set,
        run=run,
        foreign=model_set.survey_id != survey.pk,
        flagged=[(name, per_model.get(name, 0)) for name in predicted],
        any_flagged=any_flagged,
        skipped=sorted(skipped.items()),
        coverage=[
            (name, r.get("n"), r.get("coverage_68"), r.get("coverage_95"), r.get("width_68_dex")) for name, r in reports.items()
        ],
        classes=[(c, max(r.get("by_class", {}).get(c, {}).get("n", 0) for r in reports.values())) for c in classes],
        coverage_by_class=[
            (name, [r.get("by_class", {}).get(c, {}).get("coverage_68") for c in classes]) for name, r in reports.items()
        ],
        catalogue_calibration=reports.get(CATALOGUE_MODEL, {}),
    )
