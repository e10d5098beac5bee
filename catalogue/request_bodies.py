"""Chunked request bodies under WSGI servers that pass them on undecoded (Django's runserver and test server).

A client that streams its upload sends ``Transfer-Encoding: chunked`` and no Content-Length
(STILTS does, for TAP uploads). gunicorn decodes such a body and says so
(``wsgi.input_terminated``); Django's own servers do neither, so Django read the body as
empty and the request arrived without its parameters. This middleware decodes the chunks
itself where the server did not, up to ``DATA_UPLOAD_MAX_BODY_BYTES``, and answers a body
that is larger or badly framed with 413 or 400.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse


class BodyError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_chunked(stream, limit: int) -> bytes:
    """The body a chunked stream carries (RFC 9112 section 7.1), at most ``limit`` bytes."""
    body = bytearray()
    while True:
        line = stream.readline(1024)
        if not line.endswith(b"\n"):
            raise BodyError("the chunked request body ended inside a chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyError(f"the chunked request body has a bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers, then the blank line
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise BodyError(f"the request body is over {limit:,} bytes", status=413)
        chunk = stream.read(size)
        if len(chunk) != size:
            raise BodyError("the chunked request body ended inside a chunk")
        body += chunk
        stream.readline(16)  # the CRLF after the chunk


class _Unlimited:
    """The socket under Django's servers' ``LimitedStream``, which they set to read nothing when a request
    has no Content-Length (it keeps the socket's read and readline; no public way to reach them)."""

    def __init__(self, limited: LimitedStream) -> None:
        self.read, self.readline = limited._read, limited._readline


def _unlimited(stream):
    if isinstance(stream, LimitedStream) and hasattr(stream, "_read") and hasattr(stream, "_readline"):
        return _Unlimited(stream)
    return stream


class ChunkedBodies:
    """First in the chain: give Django the decoded body of a chunked request the server left encoded."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        environ = request.META
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if chunked and not environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH"):
            stream = _unlimited(environ["wsgi.input"])
            try:
                body = decode_chunked(stream, settings.DATA_UPLOAD_MAX_BODY_BYTES)
            except BodyError as exc:
                return HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
            request._stream = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)
