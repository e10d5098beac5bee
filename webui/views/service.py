"""What the service itself serves: its health, and plotly.js for the figures."""

from __future__ import annotations

from pathlib import Path

from django.db import DatabaseError, connection
from django.http import FileResponse, HttpRequest, JsonResponse
from django.views.decorators.cache import cache_control


def health(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - Django's signature
    """For container healthchecks and load balancers: 200 while the database answers, 503 otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return JsonResponse({"database": f"unreachable: {exc}"}, status=503)
    return JsonResponse({"database": "ok"})


@cache_control(max_age=86400)
def plotly_js(request: HttpRequest) -> FileResponse:  # noqa: ARG001 - Django's signature
    """plotly.js from the installed plotly package: figures work without internet."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(open(path, "rb"), content_type="text/javascript")
