"""What the API returns: model rows as JSON, every quantity's unit in its field description."""

from __future__ import annotations

from functools import cached_property
from urllib.parse import quote

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from catalogue import registry, selectors
from catalogue.columns import CATALOGUE_ML_COLUMNS, GALAXY_COLUMNS, PREDICTION_COLUMNS, PREDICTION_FIELDS
from catalogue.models import ExperimentResult, Galaxy, ModelSet, Prediction, Run, Survey, TrainedModel
from catalogue.services.image_store import stored_resolutions
from pipeline import gz2
from pipeline.presets import PRESETS

#: Field name -> unit, for clients that want units as data (the schema has them as text).
GALAXY_UNITS = {c.name: c.unit for c in GALAXY_COLUMNS + PREDICTION_COLUMNS + CATALOGUE_ML_COLUMNS if c.unit}
#: JSON types of the catalogue M/L object's members, by column kind.
_JSON_TYPES = {"float": "number", "int": "boolean", "str": "string"}
CATALOGUE_ML_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": "the catalogue's M/L: the prediction of the best-validated named model of the survey's model set "
    "whose inputs the galaxy has (null where no set predicted the galaxy; absent with catalogue_ml=false or model=)",
    "properties": {
        c.name: (
            {"type": "array", "items": {"type": "string"}, "description": c.description}
            if c.name == "support_reasons"
            else {"type": _JSON_TYPES[c.kind], "nullable": True, "description": c.help_text}
        )
        for c in CATALOGUE_ML_COLUMNS
    },
}


def catalogue_ml_object(galaxy: Galaxy) -> dict | None:
    """The catalogue's M/L members of an annotated galaxy (see catalogue.selectors.catalogue_ml), or None unpredicted."""
    values = galaxy.__dict__
    found = {c.name: values[selectors.CATALOGUE_PREFIX + c.name] for c in CATALOGUE_ML_COLUMNS}
    if found["ml"] is None:
        return None
    found["out_of_support"] = bool(found["out_of_support"])
    found["support_reasons"] = found["support_reasons"] or []
    return found


class SurveySerializer(serializers.ModelSerializer):
    n_galaxies = serializers.IntegerField(read_only=True, help_text="galaxies in the catalogue")
    n_by_split = serializers.SerializerMethodField(help_text="learning-sample galaxies per split (train, val, test)")
    model_set = serializers.SerializerMethodField(
        help_text="the model set applied to the survey last, whose predictions the catalogue's M/L comes from (null: none yet)"
    )
    n_predicted = serializers.SerializerMethodField(help_text="galaxies with a catalogue M/L (0 before a set was applied)")

    class Meta:
        model = Survey
        fields = [
            "id",
            "name",
            "h0",
            "om0",
            "split_seed",
            "has_star_catalogue",
            "n_galaxies",
            "n_by_split",
            "model_set",
            "n_predicted",
            "created",
        ]

    def get_model_set(self, survey: Survey) -> str | None:
        applied = selectors.applied_model_set(survey)
        return applied[0].name if applied else None

    def get_n_predicted(self, survey: Survey) -> int:
        return selectors.predicted_count(survey)

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_n_by_split(self, survey: Survey) -> dict:
        return selectors.split_counts(survey)


def prediction_serializer_field(name: str) -> serializers.Field:
    """A read-only serializer field for a Prediction column, described by the model's own help text (with its unit)."""
    field = Prediction._meta.get_field(name)
    kind = {"BooleanField": serializers.BooleanField, "JSONField": serializers.JSONField}.get(
        field.get_internal_type(), serializers.FloatField
    )
    return kind(read_only=True, required=False, allow_null=True, help_text=f"{field.help_text} (with ?model=)")


@extend_schema_field(CATALOGUE_ML_SCHEMA)
class CatalogueMLField(serializers.Field):
    """The catalogue M/L object of a row (read from the galaxy's annotations)."""

    def get_attribute(self, instance: Galaxy) -> Galaxy:
        if selectors.CATALOGUE_PREFIX + "ml" not in instance.__dict__:
            raise SkipField  # left out (catalogue_ml=false, or a named model's columns instead)
        return instance

    def to_representation(self, galaxy: Galaxy) -> dict | None:
        return catalogue_ml_object(galaxy)


class GalaxySerializer(serializers.ModelSerializer):
    """One catalogue row with its catalogue M/L (``catalogue_ml``); with ``?model=``, that model's prediction instead.

    A row is built straight from the stored values (every column is a number or a string as
    stored, see catalogue.columns): field-by-field DRF serialisation cost 0.2 ms a row, most
    of a 1,000-row page. ``tests/test_api.py`` checks the rows equal DRF's own representation.
    """

    survey = serializers.SlugRelatedField(slug_field="name", read_only=True)
    url = serializers.SerializerMethodField(help_text="this galaxy's API detail")

    class Meta:
        model = Galaxy
        fields = ["id", "url", "survey", *(c.name for c in GALAXY_COLUMNS)]  # every catalogue column, described once

    #: Columns of the ``?model=`` prediction joined to each row (not on the detail, which lists every prediction).
    prediction_fields = PREDICTION_FIELDS
    #: Columns copied as stored.
    stored_columns = tuple(c.name for c in GALAXY_COLUMNS)

    def get_fields(self):
        fields = {**super().get_fields(), **{name: prediction_serializer_field(name) for name in self.prediction_fields}}
        return {**fields, "catalogue_ml": CatalogueMLField(read_only=True, required=False, allow_null=True)}

    def get_url(self, galaxy: Galaxy) -> str:
        prefix, suffix = self._url_template
        return f"{prefix}{galaxy.objid}{suffix}{quote(self.survey_name(galaxy))}"

    @cached_property
    def _url_template(self) -> tuple[str, str]:
        """The detail URL around its objid, reversed once per page instead of once per row."""
        path = reverse("api:galaxy-detail", args=[0])
        request = self.context.get("request")
        path = request.build_absolute_uri(path) if request else path
        at = path.rindex("/0/") + 1
        return path[:at], path[at + 1 :] + "?survey="

    def survey_name(self, galaxy: Galaxy) -> str:
        """The survey's name without joining the survey to every row (a page holds one or a few)."""
        names = self.root.__dict__.setdefault("_survey_names", {})
        if galaxy.survey_id not in names:
            names[galaxy.survey_id] = selectors.survey_name(galaxy.survey_id)
        return names[galaxy.survey_id]

    def to_representation(self, galaxy: Galaxy) -> dict:
        row = {"id": galaxy.pk, "url": self.get_url(galaxy), "survey": self.survey_name(galaxy)}
        values = galaxy.__dict__
        row.update({name: values[name] for name in self.stored_columns})
        if selectors.CATALOGUE_PREFIX + "ml" in values:
            row["catalogue_ml"] = catalogue_ml_object(galaxy)
        if self.prediction_fields and "ml_pred" in values:
            row.update({name: values[name] for name in self.prediction_fields})
        return row


class PredictionSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    run = serializers.IntegerField(source="model.run_id", read_only=True)
    model_set = serializers.SlugRelatedField(
        source="model.model_set", slug_field="name", read_only=True, allow_null=True, help_text="the model set it came from"
    )
    error_dex = serializers.SerializerMethodField(help_text="dex, log10(ml_pred / ml_g) where the galaxy has a target")

    class Meta:
        model = Prediction
        fields = ["model", "model_name", "model_set", "run", *PREDICTION_FIELDS, "error_dex"]

    def get_error_dex(self, prediction: Prediction) -> float | None:
        import math

        target = prediction.galaxy.ml_g
        return None if not target else math.log10(prediction.ml_pred / target)


class GalaxyDetailSerializer(GalaxySerializer):
    prediction_fields = ()
    units = serializers.SerializerMethodField(help_text="field -> unit of every quantity that has one")
    images = serializers.SerializerMethodField(help_text="FITS cutouts and PNG previews of each preprocessing stage")
    gz2 = serializers.SerializerMethodField(help_text="Galaxy Zoo 2 volunteer and CNN1-predicted unconditional probabilities")
    features = serializers.SerializerMethodField(help_text="preprocessing result: scaling value, stars removed, features")
    predictions = serializers.SerializerMethodField(help_text="every model's prediction for this galaxy")

    class Meta(GalaxySerializer.Meta):
        fields = list(GalaxySerializer.Meta.fields)
        fields += [
            "extra",
            "units",
            "images",
            "gz2",
            "features",
            "predictions",
        ]

    def to_representation(self, galaxy: Galaxy) -> dict:
        """One galaxy with everything: DRF's field-by-field representation (one row, so no hurry)."""
        return serializers.ModelSerializer.to_representation(self, galaxy)

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_units(self, galaxy: Galaxy) -> dict:  # noqa: ARG002 - the same for every galaxy
        return GALAXY_UNITS

    def get_images(self, galaxy: Galaxy) -> dict:
        # the app's own download of each cutout (streamed, or a signed link on object storage), not the
        # storage's URL: /media/ is served by nothing in production, and an S3 link would expire in the response
        fits_files = {
            image.band: self._absolute(reverse("webui:galaxy-fits", args=[galaxy.pk, image.band]))
            for image in selectors.usable_images(galaxy)
        }
        previews = {"g": reverse("webui:galaxy-image", args=[galaxy.pk, "g"])} if "g" in fits_files else {}
        previews |= {f"log{r}": reverse("webui:galaxy-image", args=[galaxy.pk, f"log{r}"]) for r in stored_resolutions(galaxy)}
        return {"fits": fits_files, "png": {k: self._absolute(v) for k, v in previews.items()}}

    def get_gz2(self, galaxy: Galaxy) -> dict:
        votes = getattr(galaxy, "gz2", None)
        predicted = selectors.predicted_gz2(galaxy)
        answers = [
            {
                "answer": a,
                "name": gz2.short_name(a),
                "volunteers": None if votes is None else float(votes.probabilities[i]),
                "cnn1": None if predicted is None else float(predicted[i]),
            }
            for i, a in enumerate(gz2.ANSWER_IDS)
        ]
        return {"answers": answers}

    def get_features(self, galaxy: Galaxy) -> dict | None:
        pre = getattr(galaxy, "preprocessed", None)
        if pre is None:
            return None
        return {
            "status": pre.status,
            "error": pre.error,
            "scaling_value": pre.scaling_value,
            "scaling_fallback": pre.scaling_fallback,
            "noise_level": pre.noise_level,
            "n_stars_removed": pre.n_stars_removed,
            "features": pre.features,
            "i_band": pre.i_band,
            "i_scaling_value": pre.i_scaling_value,
        }

    def get_predictions(self, galaxy: Galaxy) -> list[dict]:
        return PredictionSerializer(selectors.galaxy_predictions(galaxy), many=True).data


class TrainedModelSerializer(serializers.ModelSerializer):
    survey = serializers.SlugRelatedField(slug_field="name", read_only=True)
    model_set = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    n_predictions = serializers.IntegerField(read_only=True, help_text="galaxies it has predicted")

    class Meta:
        model = TrainedModel
        fields = [
            "id",
            "kind",
            "name",
            "survey",
            "run",
            "model_set",
            "preset",
            "created",
            "metrics",
            "hyperparameters",
            "curves",
            "n_predictions",
        ]


class ModelSetSerializer(serializers.ModelSerializer):
    """A model set: its lineage, metrics per named model, and its members by id."""

    survey = serializers.SlugRelatedField(slug_field="name", read_only=True, help_text="training survey")
    url = serializers.HyperlinkedIdentityField(view_name="api:modelset-detail", lookup_field="name")
    named_models = serializers.SerializerMethodField(help_text="named model -> its id (GET /api/models/<id>/)")
    networks = serializers.SerializerMethodField(help_text="CNN role -> its id")
    applied_to = serializers.SerializerMethodField(help_text="surveys it has predicted, with the predict run")

    class Meta:
        model = ModelSet
        fields = [
            "name",
            "url",
            "survey",
            "run",
            "preset",
            "resolutions",
            "is_current",
            "created",
            "metrics",
            "lineage",
            "named_models",
            "networks",
            "applied_to",
        ]

    def get_named_models(self, model_set: ModelSet) -> dict[str, int]:
        return {m.name: m.pk for m in sorted(model_set.named_models.all(), key=lambda m: m.name)}  # prefetched

    def get_networks(self, model_set: ModelSet) -> dict[str, int]:
        return {m.name: m.pk for m in sorted(model_set.networks.all(), key=lambda m: m.name)}

    def get_applied_to(self, model_set: ModelSet) -> list[dict]:
        return selectors.applied_to(model_set)


class RunSerializer(serializers.ModelSerializer):
    survey = serializers.SlugRelatedField(slug_field="name", read_only=True)
    log_tail = serializers.SerializerMethodField(help_text="the last 40 lines of the run's log")
    duration_s = serializers.FloatField(
        read_only=True, allow_null=True, help_text="s, start to finish (or now); null before it starts"
    )
    failures = serializers.SerializerMethodField(help_text="chunks that failed, with their errors")

    class Meta:
        model = Run
        fields = [
            "id",
            "stage",
            "survey",
            "preset",
            "resolutions",
            "status",
            "progress",
            "items_total",
            "items_done",
            "items_failed",
            "message",
            "error",
            "result",
            "created",
            "started",
            "finished",
            "heartbeat",
            "duration_s",
            "parent",
            "log_tail",
            "failures",
        ]

    def get_log_tail(self, run: Run) -> str:
        return "\n".join(run.log.splitlines()[-40:])

    def get_failures(self, run: Run) -> list[dict]:
        return selectors.chunk_failures(run)


class RunStartSerializer(serializers.Serializer):
    """What to start: one stage (``stage``), several as a workflow (``stages``, run in pipeline order), or a
    model set to apply (``models``); the one start path decides the rest."""

    survey = serializers.SlugRelatedField(slug_field="name", queryset=selectors.every_survey())
    stage = serializers.ChoiceField(choices=[], required=False)
    stages = serializers.ListField(
        child=serializers.ChoiceField(choices=[]),
        required=False,
        allow_empty=False,
        help_text="several stages as one workflow; stages already done with the same inputs are reused",
    )
    preset = serializers.ChoiceField(choices=sorted(PRESETS), default="fast")
    force = serializers.BooleanField(default=False, help_text="redo what is already done")
    models = serializers.CharField(
        required=False,
        max_length=200,
        help_text="apply this model set instead of training (survey@run, or a training survey's name: its current "
        "set); stages default to those that run when a set is applied, and the preset is the set's",
    )
    adapt = serializers.BooleanField(
        default=False,
        help_text="with models: adapt the set to the survey's M/L targets (another instrument) and predict with the "
        "adapted set, a new set measured on the survey's galaxies it was not adapted on",
    )
    targets = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="with adapt: how many of the survey's train and validation targets to adapt on (default: all)",
    )

    def get_fields(self) -> dict:
        """The stage choices as the registry has them now (a stage may be added after import)."""
        fields = super().get_fields()
        fields["stage"].choices = fields["stages"].child.choices = list(registry.stage_names())
        return fields

    def validate(self, attrs: dict) -> dict:
        """The inputs of the one start path: ``stages`` (a list, maybe empty) and ``model_set`` (or None)."""
        if "stage" in attrs and "stages" in attrs:
            raise serializers.ValidationError("give either stage (one) or stages (a workflow), not both")
        attrs["model_set"] = None
        if "models" in attrs:
            try:
                attrs["model_set"] = selectors.resolve_model_set(attrs.pop("models"))
            except ValueError as exc:
                raise serializers.ValidationError({"models": [str(exc)]}) from exc
        elif "stage" not in attrs and "stages" not in attrs:
            raise serializers.ValidationError("give either stage (one) or stages (a workflow)")
        attrs["stages"] = [attrs.pop("stage")] if "stage" in attrs else attrs.get("stages", [])
        return attrs


class ExperimentResultSerializer(serializers.ModelSerializer):
    survey = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ExperimentResult
        fields = [
            "id",
            "experiment",
            "method",
            "feature_groups",
            "loss",
            "split",
            "l1",
            "l2",
            "rmsle",
            "median_l1",
            "within_015_dex",
            "n",
            "per_class",
            "details",
            "survey",
            "run",
            "created",
        ]


def model_set_field() -> serializers.CharField:
    """The optional ``models`` of a prediction: which model set, by name."""
    return serializers.CharField(
        required=False,
        max_length=200,
        help_text="model set (survey@run, or a training survey's name); default: the newest current set",
    )


class PredictUploadSerializer(serializers.Serializer):
    """One galaxy to predict: its g-band cutout in the bundle format and its catalogue values."""

    image = serializers.FileField(help_text="g-band FITS cutout: nanomaggy pixels, PIXSCALE, PSF_FWHM (arcsec), BAND = g, a WCS")
    z = serializers.FloatField(min_value=1e-6, max_value=10, help_text="spectroscopic redshift")
    mag_g = serializers.FloatField(min_value=-5, max_value=40, help_text="AB mag, extinction-corrected g magnitude")
    magerr_g = serializers.FloatField(
        required=False, min_value=1e-6, max_value=5, help_text="mag, its error (widens the M* interval)"
    )
    mag_i = serializers.FloatField(
        required=False, min_value=-5, max_value=40, help_text="AB mag; without it the i-band models are skipped"
    )
    objid = serializers.IntegerField(
        required=False, min_value=0, help_text="the galaxy's id: seeds star removal's noise fill as the stage does"
    )
    models = model_set_field()


class PredictResultSerializer(serializers.Serializer):
    """Per named model the M/L and M* with intervals and out-of-selection reasons, and preprocessing."""

    model_set = serializers.CharField()
    preprocessing = serializers.DictField(
        help_text="stars_removed, scaling_value, scaling_fallback, noise_level, image_px, lum_dist_mpc, pixel_kpc"
    )
    predictions = serializers.DictField(
        help_text="model name -> ml, ml_lo68, ml_hi68, ml_lo95, ml_hi95 (solMass/solLum, g band), mstar and its "
        "intervals (solMass), out_of_selection, reasons"
    )
    skipped = serializers.DictField(child=serializers.CharField(), help_text="model name -> why it did not predict")
    units = serializers.DictField(child=serializers.CharField())
