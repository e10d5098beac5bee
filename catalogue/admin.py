"""Admin registrations: staff browse every table, start runs and watch them."""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from catalogue import models, registry
from catalogue.orchestration.start import start
from catalogue.services.model_sets import mark_current
from catalogue.services.runs import RunConflict, cancel_run
from pipeline.presets import PRESETS


def _stage_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in registry.stage_names()]


class StartRunForm(forms.Form):
    survey = forms.ModelChoiceField(queryset=models.Survey.objects.filter(owner__isnull=True).order_by("name"))
    stages = forms.MultipleChoiceField(
        choices=_stage_choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="one stage runs alone; several run in this order, each starting when the one before it succeeds "
        "(with a model set: those that run when a set is applied, all of them when none is ticked)",
    )
    models = forms.ModelChoiceField(
        queryset=models.ModelSet.objects.select_related("survey"),
        required=False,
        label="apply model set",
        to_field_name="name",
        help_text="apply a trained set to the survey instead of training (its preset is used)",
    )
    adapt = forms.BooleanField(
        required=False,
        label="adapt it to the survey's targets",
        help_text="with a model set: adapt it to this survey's M/L targets (another instrument) and predict with the "
        "adapted set, measured on the survey's galaxies it was not adapted on",
    )
    targets = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="how many of the survey's train and validation targets to adapt on (empty: all)",
    )
    preset = forms.ChoiceField(
        choices=[(p, p) for p in PRESETS],
        initial="fast",
        help_text="test: seconds (tiny); fast: a laptop demo; paper: the paper's networks (GPU)",
    )
    force = forms.BooleanField(
        required=False, help_text="redo what is done: preprocessed galaxies, stages that succeeded with the same inputs"
    )

    def clean(self):
        data = super().clean()
        if not data.get("stages") and not data.get("models"):
            raise forms.ValidationError("tick at least one stage, or choose a model set to apply")
        return data


@admin.register(models.Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "source_path", "has_star_catalogue", "created", "updated")
    search_fields = ("name",)
    actions = ["start_run"]

    @admin.action(description="Start a run, or apply a model set (on the start form)")
    def start_run(self, request, queryset):  # noqa: ARG002 - Django's signature
        """To the start form with the survey chosen: the stages, or a model set to apply, are chosen there."""
        survey = queryset.order_by("name").first()
        return redirect(f"{reverse('admin:catalogue_run_start')}?survey={survey.pk}")


@admin.register(models.ModelSet)
class ModelSetAdmin(admin.ModelAdmin):
    list_display = ("name", "survey", "preset", "is_current", "created")
    list_filter = ("is_current", "preset")
    search_fields = ("name",)
    readonly_fields = (
        *("name", "survey", "run", "preset", "resolutions", "networks"),
        *("feature_sets", "lineage", "metrics", "is_current"),
    )
    actions = ["make_current"]

    @admin.action(description="Make current (the set its training survey's name stands for)")
    def make_current(self, request, queryset):
        for model_set in queryset.order_by("created"):
            mark_current(model_set)
            self.message_user(request, f"{model_set.name} is now the current set of {model_set.survey.name}", messages.INFO)

    def has_add_permission(self, request):  # noqa: ARG002 - Django's signature
        return False


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
    list_display = ("galaxy", "status", "scaling_value", "noise_level", "n_stars_removed", "error", "i_band", "updated")
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


class RunChunkInline(admin.TabularInline):
    model = models.RunChunk
    fields = ("index", "state", "attempts", "worker", "n_done", "n_failed", "duration_s", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):  # noqa: ARG002 - Django's signature
        return False


@admin.register(models.Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "stage", "survey", "preset", "status", "progress", "items_done", "items_failed", "message", "created")
    list_filter = ("stage", "status")
    readonly_fields = (
        "stage",
        "survey",
        "preset",
        "resolutions",
        "parent",
        "config",
        "status",
        "progress",
        "items_total",
        "items_done",
        "items_failed",
        "message",
        "error",
        "log",
        "result",
        "celery_task_id",
        "started_by",
        "started",
        "finished",
        "heartbeat",
    )
    inlines = [RunChunkInline]
    actions = ["cancel"]
    change_list_template = "admin/catalogue/run/change_list.html"

    def get_urls(self):
        start = path("start/", self.admin_site.admin_view(self.start_view), name="catalogue_run_start")
        return [start, *super().get_urls()]

    def start_view(self, request):
        """Start one stage, or several one after another, through the same services as the CLI and the API."""
        form = StartRunForm(request.POST or None, initial={"survey": request.GET.get("survey")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = start(
                    data["survey"],
                    data["stages"],
                    model_set=data["models"],
                    adapt=data["adapt"],
                    targets=data["targets"],
                    preset_name=data["preset"],
                    force=data["force"],
                    user=request.user,
                )
            except (RunConflict, ValueError) as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"run #{run.pk} started: {run.message}", messages.INFO)
                return redirect(reverse("webui:run", args=[run.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Start a run", "opts": self.model._meta}
        return TemplateResponse(request, "admin/catalogue/run/start.html", context)

    @admin.action(description="Cancel the selected runs")
    def cancel(self, request, queryset):
        for run in queryset:
            if cancel_run(run, request.user):
                self.message_user(request, f"run #{run.pk} cancelled", messages.INFO)
            else:
                self.message_user(request, f"run #{run.pk} had already ended ({run.status})", messages.WARNING)


@admin.register(models.Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("galaxy", "model", "ml_pred")
    raw_id_fields = ("galaxy",)


@admin.register(models.ExperimentResult)
class ExperimentResultAdmin(admin.ModelAdmin):
    list_display = ("experiment", "method", "loss", "split", "l1", "l2", "rmsle", "within_015_dex", "n")
    list_filter = ("experiment",)


@admin.register(models.TapJob)
class TapJobAdmin(admin.ModelAdmin):
    """TAP's async jobs, to watch and to delete (they are made through /tap/async, never here)."""

    list_display = ("id", "owner", "phase", "created", "rows", "overflow", "short_query")
    list_filter = ("phase",)
    search_fields = ("query", "run_id", "owner__username")
    readonly_fields = [f.name for f in models.TapJob._meta.fields]

    @admin.display(description="query")
    def short_query(self, job: models.TapJob) -> str:
        return job.query[:80]

    def has_add_permission(self, request) -> bool:  # noqa: ARG002 - Django's signature
        return False

    def delete_model(self, request, obj) -> None:  # noqa: ARG002 - Django's signature
        from catalogue.tap import jobs

        jobs.destroy(obj)


@admin.register(models.PredictionJob)
class PredictionJobAdmin(admin.ModelAdmin):
    """Users' prediction jobs, for staff to follow (their owners use /predict/ and /api/predict/jobs/)."""

    list_display = ("id", "owner", "phase", "n_rows", "model_set", "created", "destruction")
    list_filter = ("phase",)
    search_fields = ("id", "owner__username")
    readonly_fields = [f.name for f in models.PredictionJob._meta.fields]
