"""The REST API: thin viewsets over the selectors and services that the CLI and admin use too."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters import rest_framework as dj_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from catalogue import selectors
from catalogue.api import serializers as s
from catalogue.api.downloads import stored_file
from catalogue.api.filters import ExperimentResultFilter, GalaxyFilter, ModelSetFilter, RunFilter, TrainedModelFilter
from catalogue.api.pagination import CataloguePagination
from catalogue.columns import ORDERABLE_COLUMNS
from catalogue.models import Galaxy
from catalogue.orchestration.start import start
from catalogue.services.export import CONTENT_TYPES, FORMATS, stream_catalogue
from catalogue.services.model_sets import mark_current
from catalogue.services.predict_one import Upload, UploadError, predict_upload
from catalogue.services.runs import RunConflict, cancel_run


class SurveyViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = selectors.surveys_with_galaxy_counts()
    serializer_class = s.SurveySerializer
    lookup_field = "name"


@extend_schema(parameters=[OpenApiParameter("survey", str, description="survey name, where objids repeat across surveys")])
class GalaxyViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalogue: filter, order, page by cursor; a galaxy by its objid."""

    queryset = selectors.galaxies()  # the survey's name comes from one query per page, not a join per row
    serializer_class = s.GalaxySerializer
    filter_backends = [dj_filters.DjangoFilterBackend, OrderingFilter]
    filterset_class = GalaxyFilter
    ordering_fields = list(ORDERABLE_COLUMNS)
    pagination_class = CataloguePagination
    lookup_field = "objid"
    lookup_value_regex = "[0-9]+"

    def get_serializer_class(self):
        return s.GalaxyDetailSerializer if self.action == "retrieve" else s.GalaxySerializer

    def get_object(self) -> Galaxy:
        found = selectors.galaxies_with_objid(self.kwargs["objid"], self.request.query_params.get("survey", ""))
        if not found:
            raise NotFound("no galaxy with that objid (and survey)")
        if len(found) > 1:
            raise ValidationError({"survey": ["this objid is in several surveys: add ?survey=NAME"]})
        return selectors.galaxy_with_catalogue_ml(found[0])


class TrainedModelViewSet(viewsets.ReadOnlyModelViewSet):
    """Trained CNNs, GBMs and baselines with metrics, hyper-parameters and training curves."""

    queryset = selectors.models_with_prediction_counts()
    serializer_class = s.TrainedModelSerializer
    filterset_class = TrainedModelFilter

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, permission_classes=[permissions.IsAdminUser])
    def artifact(self, request: Request, pk=None) -> HttpResponse:  # noqa: ARG002 - DRF's signature
        """The model file (.keras or pickled GBM): staff only, since pickles run code when loaded."""
        model = self.get_object()
        if not model.artifact:
            raise NotFound("this model has no artifact")
        return stored_file(model.artifact, "application/octet-stream", model.artifact.name.rsplit("/", 1)[-1])


class ModelSetViewSet(viewsets.ReadOnlyModelViewSet):
    """Model sets (``<survey>@<run>``): what one training made, with lineage and metrics; staff mark one current."""

    queryset = selectors.every_model_set()
    serializer_class = s.ModelSetSerializer
    filterset_class = ModelSetFilter
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    @extend_schema(request=None, responses={200: s.ModelSetSerializer})
    @action(detail=True, methods=["post"], permission_classes=[permissions.IsAdminUser])
    def current(self, request: Request, name=None) -> Response:  # noqa: ARG002 - DRF's signature
        """Make this set its training survey's current one (stored predictions do not change)."""
        model_set = self.get_object()
        mark_current(model_set)
        return Response(s.ModelSetSerializer(model_set, context={"request": request}).data)


class RunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Pipeline runs with progress and log tail; staff start and cancel them."""

    queryset = selectors.runs_newest_first()
    serializer_class = s.RunSerializer
    filterset_class = RunFilter

    def get_permissions(self):
        if self.action in {"create", "cancel"}:
            return [permissions.IsAdminUser()]
        return super().get_permissions()

    @extend_schema(request=s.RunStartSerializer, responses={201: s.RunSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:  # noqa: ARG002 - DRF's signature
        """Start a stage (``stage``), a workflow (``stages``) or a model set's application (``models``, with
        ``adapt``: and its adaptation to the survey's targets) on a survey, through the one start path the CLI
        and the admin use."""
        form = s.RunStartSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            run = start(
                data["survey"],
                data["stages"],
                model_set=data["model_set"],
                adapt=data["adapt"],
                targets=data.get("targets"),
                preset_name=data["preset"],
                force=data["force"],
                user=request.user,
            )
        except RunConflict as exc:
            return Response({"detail": str(exc), "active_run": exc.active.pk}, status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        run.refresh_from_db()
        return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:  # noqa: ARG002 - DRF's signature
        run = self.get_object()
        changed = cancel_run(run, user=request.user)
        run.refresh_from_db()
        return Response(s.RunSerializer(run).data, status=status.HTTP_200_OK if changed else status.HTTP_409_CONFLICT)


class PredictUpload(APIView):
    """M/L of one uploaded galaxy through every named model of a set; nothing is stored."""

    permission_classes = [permissions.IsAuthenticated]
    throttle_classes = [ScopedRateThrottle, UserRateThrottle]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": s.PredictUploadSerializer}, responses={200: s.PredictResultSerializer})
    def post(self, request: Request) -> Response:
        form = s.PredictUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            model_set = selectors.resolve_model_set(data["models"]) if data.get("models") else selectors.default_model_set()
        except ValueError as exc:
            raise ValidationError({"models": [str(exc)]}) from exc
        upload = Upload(
            fits_bytes=data["image"].read(),
            z=data["z"],
            mag_g=data["mag_g"],
            magerr_g=data.get("magerr_g"),
            mag_i=data.get("mag_i"),
            objid=data.get("objid"),
        )
        try:
            result = predict_upload(upload, model_set)
        except UploadError as exc:
            field, _, message = str(exc).partition(": ")
            raise ValidationError({field: [message]}) from exc
        return Response(result.as_dict())


class ExperimentResultViewSet(viewsets.ReadOnlyModelViewSet):
    """Rows of every ablation and comparison (Table 1, Table B.1, Fig. 8, significance)."""

    queryset = selectors.experiment_results()
    serializer_class = s.ExperimentResultSerializer
    filterset_class = ExperimentResultFilter


class CatalogueDownload(APIView):
    """The filtered catalogue as a file (csv, ecsv, fits, votable, parquet), streamed."""

    @extend_schema(
        parameters=[
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=FORMATS, description="file format"),
            *(OpenApiParameter(name, str) for name in GalaxyFilter.base_filters),
        ],
        responses={(200, media.split(";")[0]): OpenApiTypes.BINARY for media in CONTENT_TYPES.values()},
    )
    def get(self, request: Request, fmt: str) -> StreamingHttpResponse:
        if fmt not in FORMATS:
            raise NotFound(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        filterset = GalaxyFilter(request.query_params, queryset=selectors.galaxies(), request=request)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        queryset = filterset.qs
        survey = filterset.survey_object
        model = filterset.prediction_model
        # The named model's prediction columns with model=, else the catalogue's M/L (none with catalogue_ml=false).
        predicted = filterset.prediction_columns[0] if filterset.prediction_columns else None
        response = StreamingHttpResponse(stream_catalogue(fmt, queryset, survey, predicted), content_type=CONTENT_TYPES[fmt])
        name = f"morphomass-{survey.name if survey else 'all'}{'-' + model.name if model else ''}.{fmt}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


@csrf_exempt
def not_found(request, unmatched: str = "") -> JsonResponse:  # noqa: ARG001 - the URL's capture
    """Any other path under /api/: a JSON 404 as from the views, not an HTML page."""
    return JsonResponse({"detail": f"no API endpoint at {request.path}; see /api/docs/"}, status=404)
