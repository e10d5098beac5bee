"""Start feature extraction: every galaxy of a survey through the trained CNNs, on the gpu queue.

The features (docs/stages.md): CNN1-3's 37 GZ2 probabilities, CNN1's pooled
activations and CNN4's 37 next-to-last activations, for every galaxy with images (all
splits, with or without targets or votes), each set stored as a versioned
:class:`~catalogue.models.FeatureSet`.
"""

from __future__ import annotations

from django.db.models import Max

from catalogue.models import FeatureSet, Galaxy, GalaxyStatus, Run, RunStage, Survey, TrainedModel
from catalogue.services import runs
from pipeline import gz2
from pipeline.presets import CNN_ROLES, FEATURE_LAYERS, cnn_network, preset

STAGE = RunStage.FEATURES
TASK = "pipeline.tasks.gpu_extract_features"


def feature_names(prefix: str, layer: str, width: int) -> list[str]:
    """Column names, e.g. ``cnn1_resnet50.p_a01_smooth``, ``cnn1_resnet50.pool_0017``."""
    if layer == "gz2":
        return [f"{prefix}.p_{a}_{dict(gz2.TASK_BY_ID[gz2.TASK_OF_ANSWER[a]].answers)[a]}" for a in gz2.ANSWER_IDS]
    if layer == "pool":
        return [f"{prefix}.pool_{i:04d}" for i in range(width)]
    return [f"{prefix}.penultimate_{i:02d}" for i in range(width)]


def latest_cnn_models(survey: Survey, preset_name: str) -> dict[str, TrainedModel]:
    """The newest trained model of each CNN role for a survey and preset, from cnn runs that
    succeeded: a cancelled or failed run's first networks are not mixed with another's."""
    found = {}
    finished = TrainedModel.objects.filter(
        survey=survey, kind="cnn", preset=preset_name, run__status=Run.Status.SUCCEEDED
    ).order_by("-run__finished", "-pk")
    for role in CNN_ROLES:
        model = finished.filter(name=role).first()
        if model is not None:
            found[role] = model
    return found


def start_features_run(
    survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None, task_id: str = ""
) -> Run:
    """Queue feature extraction with the survey's latest CNNs of a preset.

    Raises
    ------
    ValueError
        when a CNN role has no trained model yet.
    RunConflict
        when a features run is already active on the survey.
    """
    from catalogue.services.image_store import written_rows

    config = preset(preset_name)
    models = latest_cnn_models(survey, preset_name)
    missing = [r for r in CNN_ROLES if r not in models]
    if missing:
        raise ValueError(
            f"no trained {', '.join(missing)} for survey {survey.name} and preset {preset_name}; run the cnn stage first"
        )
    existing = runs.active_run(survey, STAGE)
    if existing is not None:
        raise runs.RunConflict(existing)
    candidates = Galaxy.objects.filter(survey=survey).exclude(status=GalaxyStatus.REJECTED)
    ids = list(candidates.order_by("id").values_list("id", flat=True))
    for size in sorted({cnn_network(config, r)["size"] for r in CNN_ROLES}):
        ids = written_rows(survey, size, ids)[1].tolist()
    size = int(config["feature_chunk_size"])
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    sets: dict[str, int] = {}

    def create_feature_sets(run: Run) -> None:
        for role in CNN_ROLES:
            model = models[role]
            prefix = model.hyperparameters.get("keras_name", role)
            for layer in FEATURE_LAYERS[role]:
                name = f"{role}.{layer}"
                version = (FeatureSet.objects.filter(survey=survey, name=name).aggregate(v=Max("version"))["v"] or 0) + 1
                width = model.hyperparameters["feature_widths"][layer]  # recorded at training: no Keras here
                sets[name] = FeatureSet.objects.create(
                    name=name,
                    version=version,
                    survey=survey,
                    feature_names=feature_names(prefix, layer, width),
                    producing_model=model,
                    run=run,
                ).pk
        Run.objects.filter(pk=run.pk).update(config={**run.config, "feature_sets": sets})

    run = runs.create_run(
        STAGE,
        survey,
        chunks,
        preset=preset_name,
        user=user,
        parent=parent,
        task_id=task_id,
        config={"models": {r: m.pk for r, m in models.items()}, "force": force},
        prepare=create_feature_sets,
    )
    runs.enqueue_chunks(run, TASK)
    run.refresh_from_db()
    return run
