"""Start CNN training: one run on the gpu queue that trains CNN1-3 on GZ2, then CNN4 on M/L."""

from __future__ import annotations

from catalogue.models import Run, RunStage, Survey
from catalogue.services import runs
from pipeline.presets import CNN_ROLES, cnn_network, preset

STAGE = RunStage.CNN
TASK = "pipeline.tasks.gpu_train_cnn"


def start_cnn_run(
    survey: Survey, *, preset_name: str = "fast", force: bool = False, user=None, parent: Run | None = None, task_id: str = ""
) -> Run:
    """Queue the training of the four CNNs of a preset on a survey.

    Raises
    ------
    ValueError
        for an unknown preset, or when the survey has no images at a network's input size.
    RunConflict
        when a CNN run is already active on the survey.
    """
    from catalogue.models import ImageStore

    config = preset(preset_name)
    sizes = sorted({cnn_network(config, role)["size"] for role in CNN_ROLES})
    have = set(ImageStore.objects.filter(survey=survey, resolution__in=sizes).values_list("resolution", flat=True))
    missing = [s for s in sizes if s not in have]
    if missing:
        raise ValueError(
            f"survey {survey.name} has no preprocessed images at {', '.join(f'{s} px' for s in missing)}; "
            f"run the preprocess stage with the {preset_name} preset first"
        )
    existing = runs.active_run(survey, STAGE)
    if existing is not None:
        raise runs.RunConflict(existing)
    run = runs.create_run(
        STAGE,
        survey,
        [list(range(1, len(CNN_ROLES) + 1))],
        preset=preset_name,
        resolutions=sizes,
        user=user,
        parent=parent,
        config={"cnn": config["cnn"], "training": config["training"], "force": force},
        task_id=task_id,
    )
    runs.enqueue_chunks(run, TASK)
    run.refresh_from_db()
    return run
