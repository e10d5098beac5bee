"""The catalogue's filters, shared by the galaxy list, the downloads and the web UI's browser."""

from __future__ import annotations

from functools import cached_property

import django_filters as filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

from catalogue.api.strict_filters import IdFilter, StrictBooleanFilter, StrictFilterSet
from catalogue.columns import ORDERABLE_COLUMNS, column
from catalogue.models import ExperimentResult, Galaxy, GalaxyStatus, ModelSet, Run, Split, Survey, TrainedModel
from catalogue.selectors import (
    PredictionColumns,
    catalogue_ml_columns,
    every_survey,
    galaxies_in_cone,
    one_model_columns,
    prediction_model,
    resolve_model_set,
    survey_named,
)
from pipeline.learning.metrics import MORPHOLOGY_CLASSES
from pipeline.learning.named_models import CATALOGUE_MODEL

MAX_CONE_RADIUS_DEG = 30.0
ML_UNIT = column("ml_g").unit
MSTAR_UNIT = column("mstar").unit


@extend_schema_field({"type": "number", "minimum": -90, "maximum": 90})
class DeclinationFilter(filters.NumberFilter):
    """A declination in degrees; the schema gives its range (checked in filter_queryset)."""


@extend_schema_field({"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": MAX_CONE_RADIUS_DEG})
class RadiusFilter(filters.NumberFilter):
    """A cone radius in degrees; the schema gives its range (checked in filter_queryset)."""


class TrainedModelFilter(StrictFilterSet):
    survey__name = filters.CharFilter(help_text="survey name")
    run = IdFilter(field_name="run_id", help_text="the run that trained it")

    class Meta:
        model = TrainedModel
        fields = ["kind", "name"]


class ModelSetFilter(StrictFilterSet):
    survey__name = filters.CharFilter(help_text="training survey name")
    is_current = StrictBooleanFilter(help_text="only the current set of each training survey")

    class Meta:
        model = ModelSet
        fields: list[str] = []


class RunFilter(StrictFilterSet):
    survey__name = filters.CharFilter(help_text="survey name")

    class Meta:
        model = Run
        fields = ["stage", "status"]


class ExperimentResultFilter(StrictFilterSet):
    survey__name = filters.CharFilter(help_text="survey name")
    run = IdFilter(field_name="run_id", help_text="the experiments run that wrote it")

    class Meta:
        model = ExperimentResult
        fields = ["experiment"]


class GalaxyFilter(StrictFilterSet):
    survey = filters.CharFilter(label="survey", method="in_survey", help_text="survey name")
    split = filters.ChoiceFilter(
        label="split", choices=[(s.value, s.label) for s in Split if s.value], help_text="train, val or test"
    )
    status = filters.ChoiceFilter(
        label="status", choices=GalaxyStatus.choices, help_text="ok (learning sample), excluded or rejected"
    )
    z_min = filters.NumberFilter(label="z from", field_name="z", lookup_expr="gte", help_text="lowest redshift")
    z_max = filters.NumberFilter(label="z to", field_name="z", lookup_expr="lte", help_text="highest redshift")
    ml_min = filters.NumberFilter(
        label=f"target M/L from [{ML_UNIT}]", field_name="ml_g", lookup_expr="gte", help_text=f"{ML_UNIT}, lowest target M/L"
    )
    ml_max = filters.NumberFilter(
        label=f"target M/L to [{ML_UNIT}]", field_name="ml_g", lookup_expr="lte", help_text=f"{ML_UNIT}, highest target M/L"
    )
    morphology = filters.ChoiceFilter(
        label="morphology", choices=[(c, c) for c in MORPHOLOGY_CLASSES], help_text="class from CNN1's probabilities"
    )
    has_gz2 = StrictBooleanFilter(
        label="has GZ2 votes", field_name="gz2", lookup_expr="isnull", exclude=True, help_text="has Galaxy Zoo 2 votes"
    )
    model = filters.CharFilter(
        label="model", method="no_filter", help_text="model id, or name (with survey): adds ml_pred and mstar_pred"
    )
    models = filters.CharFilter(
        label="model set",
        method="no_filter",
        help_text="the model set whose predictions to show (survey@run, or a training survey's name); "
        "default: the set applied to the survey last",
    )
    catalogue_ml = StrictBooleanFilter(
        label="catalogue M/L",
        method="no_filter",
        help_text="each row's catalogue_ml: the predicted M/L of the best-validated model whose inputs the galaxy has "
        "(default true; false leaves the predictions out; with model, that model's columns instead)",
    )
    ml_pred_min = filters.NumberFilter(
        label=f"predicted M/L from [{ML_UNIT}]",
        method="no_filter",
        help_text=f"{ML_UNIT}, lowest predicted M/L (the catalogue's, or with model that model's)",
    )
    ml_pred_max = filters.NumberFilter(
        label=f"predicted M/L to [{ML_UNIT}]",
        method="no_filter",
        help_text=f"{ML_UNIT}, highest predicted M/L (the catalogue's, or with model that model's)",
    )
    mstar_min = filters.NumberFilter(
        label=f"M* from [{MSTAR_UNIT}]",
        method="no_filter",
        help_text=f"{MSTAR_UNIT}, lowest predicted stellar mass (the catalogue's, or with model that model's)",
    )
    mstar_max = filters.NumberFilter(
        label=f"M* to [{MSTAR_UNIT}]",
        method="no_filter",
        help_text=f"{MSTAR_UNIT}, highest predicted stellar mass (the catalogue's, or with model that model's)",
    )
    flagged = StrictBooleanFilter(
        label="out of selection",
        method="no_filter",
        help_text="only galaxies whose prediction is (true) or is not (false) flagged out of the training selection",
    )
    ra = filters.NumberFilter(
        label="cone RA [deg]", method="no_filter", help_text="deg, cone centre right ascension (with dec and radius)"
    )
    dec = DeclinationFilter(label="cone Dec [deg]", method="no_filter", help_text="deg, cone centre declination")
    radius = RadiusFilter(
        label="cone radius [deg]", method="no_filter", help_text=f"deg, cone radius, at most {MAX_CONE_RADIUS_DEG:g}"
    )
    ordering = filters.OrderingFilter(fields=list(ORDERABLE_COLUMNS), help_text="a field, '-' for descending")

    class Meta:
        model = Galaxy
        fields: list[str] = []

    def no_filter(self, queryset, name, value):  # noqa: ARG002 - handled in filter_queryset
        return queryset

    def in_survey(self, queryset, name, value):  # noqa: ARG002 - django-filter's signature
        """By the survey's id, not a join on its name, so that PostgreSQL walks the (survey, column) indexes in order."""
        survey = self.survey_object
        return queryset.filter(survey_id=survey.pk) if survey else queryset.none()

    @cached_property
    def survey_object(self) -> Survey | None:
        name = self.form.cleaned_data.get("survey")
        return survey_named(name) if name else None

    @cached_property
    def prediction_model(self) -> TrainedModel | None:
        """The model named by ``model`` (None without one); a bad name is a 400 with the reason."""
        value, set_name = self.form.cleaned_data.get("model"), self.form.cleaned_data.get("models")
        if not value:
            if set_name:
                hint = f"a model set chooses predictions: give model as well (?model={CATALOGUE_MODEL})"
                raise ValidationError({"models": [hint]})
            return None
        try:
            model_set = resolve_model_set(set_name) if set_name else None
        except ValueError as exc:
            raise ValidationError({"models": [str(exc)]}) from exc
        try:
            return prediction_model(self.survey_object, value, model_set)
        except ValueError as exc:
            raise ValidationError({"model": [str(exc)]}) from exc

    @cached_property
    def prediction_columns(self) -> list[PredictionColumns]:
        """What each row carries: with ``model``, that model's predictions; else the catalogue's M/L
        (unless ``catalogue_ml=false``). One set of joins either way, so a page stays an index walk."""
        if self.prediction_model is not None:
            return [one_model_columns(self.prediction_model)]
        if self.form.cleaned_data.get("catalogue_ml") is False:
            return []
        survey = self.survey_object
        return [catalogue_ml_columns([survey] if survey else every_survey())]

    def filter_queryset(self, queryset: QuerySet[Galaxy]) -> QuerySet[Galaxy]:
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        for columns in self.prediction_columns:
            queryset = columns.annotate(queryset)
        ranges = {"ml_pred_min": ("ml", "gte"), "ml_pred_max": ("ml", "lte"), "mstar_min": ("mstar", "gte")}
        ranges.update(mstar_max=("mstar", "lte"), flagged=("out_of_support", "exact"))
        asked = {name: data[name] for name in ranges if data.get(name) is not None}
        if asked and not self.prediction_columns:
            hint = f"{', '.join(asked)} filter predictions: leave catalogue_ml on, or give model"
            raise ValidationError({"catalogue_ml": [hint]})
        for name, value in asked.items():
            queryset = queryset.filter(**{f"{self._predicted(ranges[name][0])}__{ranges[name][1]}": value})
        return self._cone(queryset)

    def _predicted(self, name: str) -> str:
        """The attribute a predicted-value filter reads: the named model's column with ``model``, else the catalogue's."""
        columns = self.prediction_columns[-1]
        if columns.prefix:  # the catalogue's columns
            return columns.attribute(name)
        return columns.attribute({"ml": "ml_pred", "mstar": "mstar_pred"}.get(name, name))

    def _cone(self, queryset: QuerySet[Galaxy]) -> QuerySet[Galaxy]:
        """The galaxies within the cone of ``ra``, ``dec`` and ``radius`` (all or none of them)."""
        data = self.form.cleaned_data
        cone = [data.get(k) for k in ("ra", "dec", "radius")]
        if any(v is not None for v in cone):
            if any(v is None for v in cone):
                raise ValidationError({"radius": ["a cone needs ra, dec and radius (degrees)"]})
            ra, dec, radius = cone
            if not -90 <= dec <= 90 or not 0 < radius <= MAX_CONE_RADIUS_DEG:
                raise ValidationError({"radius": [f"dec must be in [-90, 90] and radius in (0, {MAX_CONE_RADIUS_DEG:g}] deg"]})
            queryset = galaxies_in_cone(ra, dec, radius, queryset)
        return queryset
