"""Model sets: what one training produced, named ``<survey>@<run>``, recorded once and marked current.

A set is recorded when the run that makes the named models succeeds (:func:`record_model_set`,
that stage's ``on_finish``). It holds the named models of that run (six, and ``gi_images``
where the survey had i images) and the networks whose features they were trained on, with
the lineage a user needs to trust a transfer: the runs of each stage the registry puts in a
model set, the galaxies per split, a hash of the training data and the code version.
Reading sets (by name, the default one, the one applied to a survey) is for the selectors.
"""

from __future__ import annotations

import importlib.metadata

from django.db import transaction

from catalogue import registry
from catalogue.models import FeatureSet, ModelSet, Run, TrainedModel
from catalogue.selectors import digest, learning_sample
from pipeline.learning.named_models import CATALOGUE_MODEL, NAMED_MODEL_NAMES, REQUIRED_MODEL_NAMES
from pipeline.presets import ALL_ROLES

#: Model metrics copied into a set's side-by-side summary.
SUMMARY_METRICS = ("l1", "rmsle", "within_015_dex", "n")


def set_name(survey_name: str, run_id: int) -> str:
    return f"{survey_name}@{run_id}"


def _recorded_or_named(run: Run) -> tuple[ModelSet | None, dict[str, TrainedModel] | None]:
    """The set ``run`` already recorded, else its named models by name (None when a required one is missing)."""
    existing = ModelSet.objects.filter(run_id=run.pk).first()
    if existing is not None:
        return existing, None
    named = {m.name: m for m in TrainedModel.objects.filter(run_id=run.pk, name__in=NAMED_MODEL_NAMES)}
    return None, named if set(REQUIRED_MODEL_NAMES) <= set(named) else None


def record_model_set(run: Run) -> ModelSet | None:
    """The model set of a finished run that made named models, made once (a second call returns the same set).

    Returns None when the run lacks a required named model.
    """
    existing, named = _recorded_or_named(run)
    if existing is not None or named is None:
        return existing
    feature_set_ids = dict(named[CATALOGUE_MODEL].hyperparameters.get("feature_sets", {}))
    feature_sets = list(FeatureSet.objects.filter(pk__in=feature_set_ids.values()))
    producers = [fs.producing_model_id for fs in feature_sets if fs.producing_model_id is not None]
    networks = {network.name: network for network in TrainedModel.objects.filter(pk__in=producers)}
    survey = run.survey
    members = [run.pk, *(fs.run_id for fs in feature_sets), *(n.run_id for n in networks.values())]
    rows = learning_sample(survey)
    per_split: dict[str, int] = {}
    for row in rows:
        per_split[row[1]] = per_split.get(row[1], 0) + 1
    lineage = {
        "training_survey": survey.name,
        "preset": run.preset,
        "runs": {"workflow": run.parent_id, **lineage_runs(run, members)},
        "networks": {role: networks[role].pk for role in ALL_ROLES if role in networks},
        "galaxies": {"learning_sample": len(rows), **dict(sorted(per_split.items()))},
        "training_data_sha256": digest(rows),
        "code": code_version(),
    }
    with transaction.atomic():
        model_set = ModelSet.objects.create(
            name=set_name(survey.name, run.pk),
            survey_id=survey.pk,
            run_id=run.pk,
            preset=run.preset,
            resolutions=sorted({int(n.hyperparameters.get("size", 0)) for n in networks.values()} - {0}),
            feature_sets=feature_set_ids,
            lineage=lineage,
            metrics={name: _summary(model.metrics) for name, model in sorted(named.items())},
        )
        model_set.networks.set(networks.values())
        TrainedModel.objects.filter(pk__in=[m.pk for m in named.values()]).update(model_set_id=model_set.pk)
    return model_set


def record_adapted_set(run: Run) -> ModelSet | None:
    """The set an adapt run made: its adapted models with the networks of the set it adapted, named
    ``<survey>@<run>``, made once. Its lineage names that set and the targets it was adapted on; its
    test metrics are on the survey's galaxies it was not adapted on, beside the set applied as it is
    (``metrics[...]["as_is"]``).

    Returns None when the run adapted no required named model.
    """
    existing, named = _recorded_or_named(run)
    if existing is not None or named is None:
        return existing
    source = ModelSet.objects.select_related("survey").get(pk=run.config["model_set"])
    networks = list(source.networks.all())
    adaptation = named[CATALOGUE_MODEL].metrics.get("adaptation", {})
    held_out = named[CATALOGUE_MODEL].metrics.get("held_out", {})
    lineage = {
        "training_survey": source.lineage.get("training_survey", source.survey.name),
        "adapted_from": source.name,
        "adapted_to": run.survey.name,
        "preset": source.preset,
        "targets": {
            "adaptation": int(run.config["targets"]),
            "held_out": held_out.get("galaxies", 0),
            "adaptation_galaxies_sha256": adaptation.get("galaxies_sha256"),
            "held_out_galaxies_sha256": held_out.get("galaxies_sha256"),
        },
        "methods": {name: model.metrics.get("adaptation", {}).get("method") for name, model in sorted(named.items())},
        # this survey's runs that made it (its preprocess and features, the adaptation); the rest are the source's
        "runs": {"workflow": run.parent_id, **lineage_runs(run, [run.pk]), "adapt": [run.pk]},
        "source_runs": source.lineage.get("runs", {}),
        "networks": {role: pk for role, pk in source.lineage.get("networks", {}).items()},
        "galaxies": source.lineage.get("galaxies", {}),
        "training_data_sha256": source.lineage.get("training_data_sha256"),
        "code": code_version(),
    }
    with transaction.atomic():
        model_set = ModelSet.objects.create(
            name=set_name(run.survey.name, run.pk),
            survey_id=run.survey_id,
            run_id=run.pk,
            preset=source.preset,
            resolutions=source.resolutions,
            feature_sets=source.feature_sets,
            lineage=lineage,
            metrics={name: _summary(model.metrics) for name, model in sorted(named.items())},
        )
        model_set.networks.set(networks)
        TrainedModel.objects.filter(pk__in=[m.pk for m in named.values()]).update(model_set_id=model_set.pk)
    return model_set


def lineage_runs(run: Run, members: list[int | None]) -> dict[str, list[int]]:
    """Run ids per stage of the model set (:func:`catalogue.registry.model_set_stages`).

    Found from the runs that made the set's members and every run they read (their inputs'
    upstream runs), so each stage names the runs the set really came from. A stage of the set
    that none of them read names the survey's newest successful run of it before ``run`` ended.
    """
    wanted = registry.model_set_stages()
    found: dict[str, set[int]] = {}
    todo, seen = [pk for pk in members if pk is not None], set()
    while todo:
        pk = todo.pop()
        if pk in seen:
            continue
        seen.add(pk)
        reached = Run.objects.filter(pk=pk).values_list("stage", "config").first()
        if reached is None:
            continue
        stage, config = reached
        if stage in wanted:
            found.setdefault(stage, set()).add(pk)
        todo += [v for v in (config.get("inputs") or {}).get("upstream", {}).values() if v]
    for stage in wanted:
        if stage not in found:
            earlier = Run.objects.filter(survey_id=run.survey_id, stage=stage, status=Run.Status.SUCCEEDED)
            if run.finished is not None:
                earlier = earlier.filter(finished__lte=run.finished)
            latest = earlier.order_by("-finished", "-pk").values_list("pk", flat=True).first()
            if latest is not None:
                found[stage] = {latest}
    return {stage: sorted(found[stage]) for stage in wanted if stage in found}


def _summary(metrics: dict) -> dict:
    """A named model's validation and test metrics, with its interval coverage on the test split (and,
    for an adapted model, the same of the model it was adapted from on the same galaxies)."""
    calibration = metrics.get("calibration", {})
    as_is = metrics.get("as_is")
    extra = {}
    if as_is is not None:
        test = as_is.get("test", {})
        extra["as_is"] = {
            "test": {k: test.get(k) for k in SUMMARY_METRICS if k in test},
            "coverage_68": as_is.get("coverage_68"),
            "coverage_95": as_is.get("coverage_95"),
        }
        extra["method"] = metrics.get("adaptation", {}).get("method")
    return {
        **extra,
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
    return {"morphomass": version, "stages": {s.name: s.version for s in registry.stages()}}


def mark_current(model_set: ModelSet) -> None:
    """Make ``model_set`` the current set of its training survey (the alias moves; predictions stay)."""
    with transaction.atomic():
        ModelSet.objects.filter(survey=model_set.survey, is_current=True).exclude(pk=model_set.pk).update(is_current=False)
        ModelSet.objects.filter(pk=model_set.pk).update(is_current=True)
    model_set.is_current = True
