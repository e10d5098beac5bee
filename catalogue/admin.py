"""Admin registrations: staff browse every table and watch runs."""

from django.contrib import admin, messages

from catalogue import models
from catalogue.services.preprocessing import start_preprocess_run


@admin.register(models.Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = ("name", "source_path", "has_star_catalogue", "created", "updated")
    search_fields = ("name",)
    actions = ["preprocess"]

    @admin.action(description="Preprocess images (fast preset: 69 and 128 px)")
    def preprocess(self, request, queryset):
        for survey in queryset:
            run = start_preprocess_run(survey, preset_name="fast", user=request.user)
            self.message_user(request, f"{survey.name}: run #{run.pk} {run.status} - {run.message}", messages.INFO)


@admin.register(models.Galaxy)
class GalaxyAdmin(admin.ModelAdmin):
    list_display = ("objid", "survey", "ra", "dec", "z", "d25_arcmin", "ml_g", "ml_g_err", "split", "status")
    list_filter = ("survey", "split", "status")
    search_fields = ("=objid",)
    readonly_fields = ("healpix",)


@admin.register(models.Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("galaxy", "band", "width", "height", "pixscale_arcsec", "psf_fwhm_arcsec", "status")
    list_filter = ("band", "status")
    raw_id_fields = ("galaxy",)


@admin.register(models.GZ2Votes)
class GZ2VotesAdmin(admin.ModelAdmin):
    raw_id_fields = ("galaxy",)


@admin.register(models.Preprocessed)
class PreprocessedAdmin(admin.ModelAdmin):
    list_display = ("galaxy", "status", "scaling_value", "noise_level", "n_stars_removed", "error", "updated")
    list_filter = ("status",)
    raw_id_fields = ("galaxy", "run")


@admin.register(models.FeatureSet)
class FeatureSetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "producing_model", "created")


@admin.register(models.FeatureVector)
class FeatureVectorAdmin(admin.ModelAdmin):
    list_display = ("galaxy", "feature_set")
    raw_id_fields = ("galaxy",)


@admin.register(models.TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "preset", "feature_set", "created")
    list_filter = ("kind",)


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "stage", "survey", "status", "progress", "items_done", "items_failed", "message", "created")
    list_filter = ("stage", "status")
    readonly_fields = ("progress", "items_total", "items_done", "items_failed", "log", "celery_task_id", "started", "finished")


@admin.register(models.Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("galaxy", "model", "ml_pred")
    raw_id_fields = ("galaxy",)


@admin.register(models.ExperimentResult)
class ExperimentResultAdmin(admin.ModelAdmin):
    list_display = ("experiment", "method", "loss", "split", "l1", "l2", "rmsle", "within_015_dex", "n")
    list_filter = ("experiment",)
