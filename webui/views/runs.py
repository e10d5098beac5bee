"""A run's page: live progress (the page polls the API), its stages, failures and log tail."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from catalogue import registry, selectors

#: Lines of the log shown.
LOG_TAIL_LINES = 40


@ensure_csrf_cookie
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A run's live progress, its failures and log tail; staff may cancel it."""
    run = selectors.run_by_id(pk)
    if run is None:
        raise Http404(f"no run #{pk}")
    context = {
        "run": run,
        "failures": selectors.chunk_failures(run),
        "stages": selectors.workflow_stages(run) if run.stage == registry.WORKFLOW else [],
        "log_tail": "\n".join(run.log.splitlines()[-LOG_TAIL_LINES:]),
    }
    return render(request, "webui/run.html", context)
