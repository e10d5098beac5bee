"""Refuse input the database cannot store, before it reaches the database: a 400, never a 500.

PostgreSQL text cannot hold a NUL byte; a query that carries one fails inside the driver
(``DataError``), wherever it came from: a path segment (``/api/surveys/%00/``), a
parameter (``?survey=%00``), a Basic-auth user name, a cookie, a JSON body. This
middleware checks what every request carries (the path, its parameters, the
``Authorization`` header and cookies) and answers a value it cannot take with a 400 that
says where it was; anything else the database refuses as data (a NUL in a JSON body, say)
is answered the same way. The cone search answers with the standard's error VOTable.
"""

from __future__ import annotations

import base64
import binascii

from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from catalogue.api import scs

NUL = "\x00"


def problem_with(request: HttpRequest) -> str:
    """What in the request the database could not store, as a sentence; empty when nothing."""
    if NUL in request.path:
        return "the path contains a NUL byte"
    for key, values in request.GET.lists():
        if NUL in key or any(NUL in value for value in values):
            return f"parameter {key.replace(NUL, '')!r} contains a NUL byte"
    for header in ("HTTP_AUTHORIZATION", "HTTP_COOKIE"):
        if NUL in request.META.get(header, ""):
            return f"the {header[5:].title()} header contains a NUL byte"
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""  # not ours to judge: the authentication answers it with a 401
        if NUL in decoded:
            return "the Basic-auth credentials contain a NUL byte"
    return ""


def refusal(request: HttpRequest, message: str) -> HttpResponse:
    """A 400 in the form the endpoint speaks (JSON for the API, text for pages), or the cone search's error VOTable."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=400)
    if request.path.startswith("/scs/"):
        return scs.error(message)  # as the cone search answers every bad request (status 200, INFO name="Error")
    return HttpResponseBadRequest(f"{message}\n", content_type="text/plain; charset=utf-8")


class RejectUnstorableInput:
    """Django middleware: see the module docstring. First in ``MIDDLEWARE``, before sessions read the database."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        message = problem_with(request)
        if message:
            return refusal(request, f"bad request: {message}")
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DataError):
            first_line = str(exception).strip().splitlines()[0] if str(exception).strip() else type(exception).__name__
            return refusal(request, f"bad request: a value the database cannot store ({first_line})")
        return None
