from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, pre_delete, pre_migrate


class CatalogueConfig(AppConfig):
    name = "catalogue"
    verbose_name = "MorphoMass catalogue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect what builds on the run engine: file cleanup (image stores, cutouts, models), the workflow, the tasks.

        The tasks are imported here so that every process (web, worker, command, test) can
        send a stage's chunk task by name; the workflow listens for runs that end.
        """
        from catalogue import tasks  # noqa: F401 - registers the stage tasks with Celery
        from catalogue.models import ImageStore, Survey, TrainedModel
        from catalogue.orchestration import workflow
        from catalogue.services import runs
        from catalogue.services.file_cleanup import delete_artifact_after_commit, delete_survey_cutouts_after_commit
        from catalogue.services.image_store import delete_store_files
        from catalogue.tap import signals as tap_signals

        post_delete.connect(delete_store_files, sender=ImageStore, dispatch_uid="imagestore-files")
        pre_delete.connect(delete_survey_cutouts_after_commit, sender=Survey, dispatch_uid="survey-cutouts")
        post_delete.connect(delete_artifact_after_commit, sender=TrainedModel, dispatch_uid="trainedmodel-artifact")
        pre_migrate.connect(tap_signals.before_migrate, sender=self, dispatch_uid="tap-views-drop")
        post_migrate.connect(tap_signals.after_migrate, sender=self, dispatch_uid="tap-views-make")
        if workflow.on_run_finished not in runs.finish_listeners:
            runs.finish_listeners.append(workflow.on_run_finished)
