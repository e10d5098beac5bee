"""DRF's refusals (a bad token, too many requests) as an IVOA protocol's own error document.

The cone search and TAP sit behind the API's authentication and throttles, but their
clients read VOTables, not DRF's JSON: each protocol gives its error writer, and a
throttled request keeps its 429 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpResponse
from rest_framework.exceptions import APIException, Throttled


def refusal(exc: Exception, error: Callable[[str, int], HttpResponse]) -> HttpResponse | None:
    """The protocol's error answer to a DRF refusal, None for any other exception."""
    if isinstance(exc, Throttled):
        wait = int(exc.wait or 1)
        response = error(f"too many requests: try again in {wait} s", 429)
        response["Retry-After"] = str(wait)
        return response
    if isinstance(exc, APIException):
        return error(str(exc.detail), exc.status_code)
    return None
