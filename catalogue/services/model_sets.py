"""Model sets: what one training produced, named ``<survey>@<run>``, found by name, marked current.

A set is recorded when a gbm run succeeds (:func:`record_model_set`, the gbm stage's
``on_finish``; the migration that introduced sets recorded one for every earlier gbm run
the same way). It holds the named models of that run (six, and ``gi_images`` where the survey had i
images) and the networks whose features they were trained on (CNN1-4, and CNN4 on
colour), with the lineage a user needs to trust a transfer: the runs
of each stage, the galaxies per split, a hash of the training data and the code version.

Which set a survey's catalogue shows is answered here too: the set of its newest
successful predict run (:func:`applied_model_set`), or the one a caller names.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

from django.apps import apps as installed_apps
from django.db import transaction

from catalogue import registry
from catalogue.models import ModelSet, Run, RunStage, Survey, TrainedModel
from pipeline.presets import ALL_ROLES
from pipeline.regression import NAMED_MODEL_NAMES, REQUIRED_MODEL_NAMES

#: The stages applying a set runs: nothing is trained.
APPLY_STAGES = ("preprocess", "features", "predict")
#: Model metrics copied into a set's side-by-side summary.
SUMMARY_METRICS = ("l1", "rmsle", "within_015_dex", "n")


def set_name(survey_name: str, run_id: int) -> str:
    return f"{survey_name}@{run_id}"


def record_model_set(gbm_run, apps=installed_apps):
    """The model set of a finished gbm run, made once (a second call returns the same set).

    ``apps`` is the app registry to take the models from: the installed one, or a
    migration's historical one (the backfill records earlier runs' sets with this function).
    Returns None when the run lacks a named model (a run stored before all six existed).
    """
    model_set_class = apps.get_model("catalogue", "ModelSet")
    trained_model_class = apps.get_model("catalogue", "TrainedModel")
    feature_set_class = apps.get_model("catalogue", "FeatureSet")
    existing = model_set_class.objects.filter(run_id=gbm_run.pk).first()
    if existing is not None:
        return existing
    named = {m.name: m for m in trained_model_class.objects.filter(run_id=gbm_run.pk, name__in=NAMED_MODEL_NAMES)}
    if not set(REQUIRED_MODEL_NAMES) <= set(named):
        return None
    feature_set_ids = dict(named["g_morph"].hyperparameters.get("feature_sets", {}))
    feature_sets = list(feature_set_class.objects.filter(pk__in=feature_set_ids.values()))
    networks = {}
    for feature_set in feature_sets:
        if feature_set.producing_model_id is not None:
            network = trained_model_class.objects.get(pk=feature_set.producing_model_id)
            networks[network.name] = network
    survey = gbm_run.survey
    features_run_ids = sorted({fs.run_id for fs in feature_sets if fs.run_id is not None})
    with transaction.atomic():
        model_set = model_set_class.objects.create(
            name=set_name(survey.name, gbm_run.pk),
            survey_id=survey.pk,
            run_id=gbm_run.pk,
            preset=gbm_run.preset,
            resolutions=sorted({int(n.hyperparameters.get("size", 0)) for n in networks.values()} - {0}),
            feature_sets=feature_set_ids,
            lineage=_lineage(gbm_run, survey, networks, features_run_ids, apps),
            metrics={name: _summary(model.metrics) for name, model in sorted(named.items())},
        )
        model_set.networks.set(networks.values())
        trained_model_class.objects.filter(pk__in=[m.pk for m in named.values()]).update(model_set_id=model_set.pk)
    return model_set


def _lineage(gbm_run, survey, networks: dict, features_run_ids: list[int], apps) -> dict:
    run_class = apps.get_model("catalogue", "Run")
    galaxy_class = apps.get_model("catalogue", "Galaxy")
    features_runs = list(run_class.objects.filter(pk__in=features_run_ids))
    preprocess = sorted({r.config.get("inputs", {}).get("upstream", {}).get("preprocess") for r in features_runs} - {None})
    learning = galaxy_class.objects.filter(survey_id=survey.pk, status="ok", ml_g__isnull=False).exclude(split="")
    rows = list(learning.order_by("objid").values_list("objid", "split", "ml_g", "ml_g_err", "z", "mag_g", "mag_i"))
    digest = hashlib.sha256(json.dumps(rows, default=repr).encode()).hexdigest()
    per_split: dict[str, int] = {}
    for row in rows:
        per_split[row[1]] = per_split.get(row[1], 0) + 1
    return {
        "training_survey": survey.name,
        "preset": gbm_run.preset,
        "runs": {
            "workflow": gbm_run.parent_id,
            "preprocess": preprocess,
            "cnn": sorted({n.run_id for n in networks.values() if n.run_id is not None}),
            "features": features_run_ids,
            "gbm": gbm_run.pk,
        },
        "networks": {role: networks[role].pk for role in ALL_ROLES if role in networks},
        "galaxies": {"learning_sample": len(rows), **dict(sorted(per_split.items()))},
        "training_data_sha256": digest,
        "code": code_version(),
    }


def _summary(metrics: dict) -> dict:
    """A named model's validation and test metrics, with its interval coverage on the test split."""
    calibration = metrics.get("calibration", {})
    return {
        "val": {k: metrics.get("val", {}).get(k) for k in SUMMARY_METRICS if k in metrics.get("val", {})},
        "test": {k: metrics.get("test", {}).get(k) for k in SUMMARY_METRICS if k in metrics.get("test", {})},
        "coverage_68": calibration.get("coverage_68"),
        "coverage_95": calibration.get("coverage_95"),
        "width_68_dex": calibration.get("width_68_dex"),
    }


def code_version() -> dict:
    """The package version and each stage's version: what decides the set's results."""
    try:
        version = importlib.metadata.version("morphomass")
    except importlib.metadata.PackageNotFoundError:
        version = "0.1.0 (source tree)"
    return {"morphomass": version, "stages": {s.name: s.version for s in registry.STAGES}}


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
    survey = Survey.objects.filter(name=text).first()
    if survey is None:
        raise ValueError(f"no survey or model set named {text!r}; model sets: {', '.join(_some_names()) or 'none yet'}")
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


def _some_names() -> list[str]:
    return list(ModelSet.objects.values_list("name", flat=True)[:10])


def mark_current(model_set: ModelSet) -> None:
    """Make ``model_set`` the current set of its training survey (the alias moves; predictions stay)."""
    with transaction.atomic():
        ModelSet.objects.filter(survey=model_set.survey, is_current=True).exclude(pk=model_set.pk).update(is_current=False)
        ModelSet.objects.filter(pk=model_set.pk).update(is_current=True)
    model_set.is_current = True


def named_models(model_set: ModelSet) -> dict[str, TrainedModel]:
    """The set's named M/L models by name."""
    return {m.name: m for m in model_set.named_models.all()}


def set_networks(model_set: ModelSet) -> dict[str, TrainedModel]:
    """The set's networks by CNN role."""
    return {m.name: m for m in model_set.networks.all()}


def applications(survey: Survey, model_set: ModelSet | None = None):
    """The survey's successful predict runs that recorded a model set (of ``model_set`` only, if given), newest first."""
    found = Run.objects.filter(survey=survey, stage=RunStage.PREDICT, status=Run.Status.SUCCEEDED, config__has_key="model_set")
    if model_set is not None:
        found = found.filter(config__model_set=model_set.pk)
    return found.order_by("-finished", "-pk")


def applied_model_set(survey: Survey) -> tuple[ModelSet, Run] | None:
    """The set of the survey's newest successful predict run, and that run; None before any."""
    for run in applications(survey)[:5]:
        found = ModelSet.objects.filter(pk=run.config["model_set"]).first()
        if found is not None:
            return found, run
    return None
