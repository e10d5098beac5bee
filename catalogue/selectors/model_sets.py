"""Model sets: found by name, the default one, their members, and which set each survey's catalogue shows.

"The set applied to a survey" is the set of the survey's newest successful run of the stage
that produces predictions and recorded a set (:func:`applied_model_set`); TAP's views join
the same answer through :func:`applied_sets_sql`.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import BigIntegerField, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from catalogue import registry
from catalogue.models import FeatureSet, ModelSet, Run, Survey, TrainedModel
from catalogue.selectors.runs import product_runs


def resolve_model_set(text: str) -> ModelSet:
    """The model set ``text`` names: ``survey@run``, or a survey name (its current set, else its newest).

    Raises
    ------
    ValueError
        naming what exists when nothing matches.
    """
    text = (text or "").strip()
    if "@" in text:
        found = ModelSet.objects.filter(name=text).first()
        if found is None:
            survey_name = text.partition("@")[0]
            names = list(ModelSet.objects.filter(survey__name=survey_name).values_list("name", flat=True)[:10])
            raise ValueError(f"no model set {text!r}; {survey_name} has: {', '.join(names) or 'none'}")
        return found
    survey = Survey.objects.filter(name=text, owner__isnull=True).first()
    if survey is None:
        raise ValueError(f"no survey or model set named {text!r}; model sets: {', '.join(some_set_names()) or 'none yet'}")
    found = ModelSet.objects.filter(survey=survey).order_by("-is_current", "-created", "-pk").first()
    if found is None:
        raise ValueError(f"survey {survey.name} has no model set: train it first (run_pipeline --survey {survey.name})")
    return found


def default_model_set() -> ModelSet:
    """The set used when none is named: the newest current set, else the newest set.

    Raises
    ------
    ValueError
        when no set has been trained yet.
    """
    found = ModelSet.objects.order_by("-is_current", "-created", "-pk").first()
    if found is None:
        raise ValueError("no model set has been trained yet: run_pipeline --survey NAME trains one")
    return found


def some_set_names(limit: int = 10) -> list[str]:
    return list(ModelSet.objects.values_list("name", flat=True)[:limit])


def model_sets(survey: Survey | None = None, limit: int = 50) -> list[ModelSet]:
    """The newest model sets (of one training survey, or all), with their survey and run."""
    found = ModelSet.objects.select_related("survey", "run")
    return list((found if survey is None else found.filter(survey=survey))[:limit])


def model_set_by_id(pk: int) -> ModelSet | None:
    return ModelSet.objects.filter(pk=pk).first()


def adapted_set_of_workflow(workflow: Run) -> ModelSet | None:
    """The set a workflow's adapting stage recorded (its own run's, or that of the run it reused); None
    when it adapted nothing (yet)."""
    adapting = [s for s in workflow.config.get("stages", []) if s in registry.adapt_stages()]
    if not adapting:
        return None
    run_id = workflow.config.get("reused", {}).get(adapting[0])
    if run_id is None:
        run_id = workflow.children.filter(stage=adapting[0], status=Run.Status.SUCCEEDED).values_list("pk", flat=True).first()
    return ModelSet.objects.filter(run_id=run_id).first() if run_id is not None else None


def every_model_set() -> QuerySet[ModelSet]:
    """Every set, newest first, with its members prefetched (the API's list)."""
    return ModelSet.objects.select_related("survey").prefetch_related("named_models", "networks").order_by("-created", "-pk")


def named_models(model_set: ModelSet) -> dict[str, TrainedModel]:
    """The set's named M/L models by name."""
    return {m.name: m for m in model_set.named_models.all()}


def set_networks(model_set: ModelSet) -> dict[str, TrainedModel]:
    """The set's networks by CNN role."""
    return {m.name: m for m in model_set.networks.all()}


def applications(survey: Survey, model_set: ModelSet | None = None) -> QuerySet[Run]:
    """The survey's successful prediction runs that recorded a model set (of ``model_set`` only, if given), newest first."""
    found = applications_of([survey.pk])
    if model_set is not None:
        found = found.filter(config__model_set=model_set.pk)
    return found


def applications_of(survey_ids: list[int]) -> QuerySet[Run]:
    """The successful prediction runs that recorded a model set of the surveys ``survey_ids``, newest first."""
    predict = registry.producer("predictions").name
    found = Run.objects.filter(survey_id__in=survey_ids, stage=predict, status=Run.Status.SUCCEEDED, config__has_key="model_set")
    return found.order_by("-finished", "-pk")


def applied_model_set(survey: Survey) -> tuple[ModelSet, Run] | None:
    """The set of the survey's newest successful prediction run that recorded one, and that run; None before any."""
    for run in applications(survey)[:5]:
        found = ModelSet.objects.filter(pk=run.config["model_set"]).first()
        if found is not None:
            return found, run
    return None


def applied_to(model_set: ModelSet, limit: int = 200) -> list[dict]:
    """The surveys ``model_set`` predicted, each with its newest prediction run: {survey, run, finished}."""
    found = Run.objects.filter(
        stage=registry.producer("predictions").name, status=Run.Status.SUCCEEDED, config__model_set=model_set.pk
    ).filter(survey__owner__isnull=True)  # a prediction job's sample is its owner's
    latest: dict[str, dict] = {}
    for run in found.select_related("survey").order_by("-finished", "-pk")[:limit]:
        latest.setdefault(run.survey.name, {"survey": run.survey.name, "run": run.pk, "finished": run.finished})
    return list(latest.values())


def applied_sets_sql() -> str:
    """SQL of (survey_id, model_set_id): each survey's set applied last, as :func:`applied_model_set` answers it.

    For views that join it (TAP's catalogue): made from the same query, on PostgreSQL.
    """
    runs = Run.objects.filter(
        stage=registry.producer("predictions").name, status=Run.Status.SUCCEEDED, config__has_key="model_set"
    )
    latest = (
        runs.annotate(model_set_id=Cast(KT("config__model_set"), BigIntegerField()))
        .filter(model_set_id__in=ModelSet.objects.values("pk"))
        .order_by("survey_id", "-finished", "-pk")
        .distinct("survey_id")
        .values("survey_id", "model_set_id")
    )
    sql, params = latest.query.sql_with_params()
    return connection.ops.compose_sql(sql, params)


def features_from(survey: Survey, model_set: ModelSet) -> dict[str, int]:
    """The survey's feature sets of its newest successful features run through the set's networks.

    Raises
    ------
    ValueError
        when there is none (run the features stage with the set first).
    """
    networks = {role: model.pk for role, model in set_networks(model_set).items()}
    for run in product_runs(survey, "feature_sets")[:50]:
        if run.config.get("models") == networks:
            return {fs.name: fs.pk for fs in FeatureSet.objects.filter(run=run)}
    raise ValueError(
        f"survey {survey.name} has no features from the networks of model set {model_set.name}; "
        f"run the features stage with it first (run_pipeline --survey {survey.name} --models {model_set.name})"
    )
