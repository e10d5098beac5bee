"""The /predict/ page: one galaxy's M/L from an uploaded g cutout, as ``POST /api/predict/`` gives it."""

from __future__ import annotations

import base64

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalogue import selectors
from catalogue.api.serializers import PredictUploadSerializer
from catalogue.services.pictures import upload_pngs
from catalogue.services.predict_one import Upload, UploadError, predict_upload
from webui.cells import DASH, format_cell, interval

#: The form's optional numbers: left out when empty, as the API's multipart form would.
PREDICT_FIELDS = ("z", "mag_g", "magerr_g", "mag_i", "objid", "models")


@login_required  # the site's sign-in page (settings.LOGIN_URL) says what signing in gives
def predict(request: HttpRequest) -> HttpResponse:
    """One galaxy's M/L from an uploaded g cutout, with its images."""
    context: dict = {"sets": selectors.model_sets(limit=50), "values": {}, "errors": {}}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in PREDICT_FIELDS}
        context["values"] = values
        form = PredictUploadSerializer(data={**{k: v for k, v in values.items() if v}, "image": request.FILES.get("image")})
        if not form.is_valid():
            context["errors"] = {k: " ".join(str(m) for m in v) for k, v in form.errors.items()}
        else:
            data = form.validated_data
            try:
                model_set = selectors.resolve_model_set(data["models"]) if data.get("models") else selectors.default_model_set()
                upload = Upload(
                    data["image"].read(), data["z"], data["mag_g"], data.get("magerr_g"), data.get("mag_i"), data.get("objid")
                )
                result = predict_upload(upload, model_set)
            except UploadError as exc:
                field, _, message = str(exc).partition(": ")
                context["errors"] = {field: message}
            except ValueError as exc:
                context["errors"] = {"models": str(exc)}
            else:
                context["result"] = result.as_dict()
                context["rows"] = [_prediction_row(name, p) for name, p in result.predictions.items()]
                context["images"] = [
                    (caption, "data:image/png;base64," + base64.b64encode(png).decode())
                    for caption, png in upload_pngs(result.galaxy)
                ]
    return render(request, "webui/predict.html", context, status=400 if context["errors"] else 200)


def _prediction_row(name: str, p: dict) -> tuple:
    return (
        name,
        format_cell(p["ml"]),
        interval(p["ml_lo68"], p["ml_hi68"]),
        interval(p["ml_lo95"], p["ml_hi95"]),
        f"{p['mstar']:.3e}" if p["mstar"] else DASH,
        interval(p["mstar_lo68"], p["mstar_hi68"]),
        "; ".join(p["reasons"]) or "no",
    )
