"""Stored files as responses, on any storage, without a web process ever holding one whole.

On local disk (or a shared filesystem) the file is streamed from its path. On object storage
the client is redirected to a link of the file itself (signed, and valid for an hour, unless the
bucket is public), which names the download and its type: the bytes go from the bucket to the
client, not through the web process (django-storages' S3 file would first copy the whole object
into the process's memory).
"""

from __future__ import annotations

from urllib.parse import quote

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponse, HttpResponseRedirect

from catalogue.services import object_store


def stored_file(file: FieldFile, content_type: str, filename: str | None = None) -> HttpResponse:
    """``file`` as a download: as an attachment named ``filename`` when given, else shown inline."""
    if object_store.has_local_paths(file.storage):
        return FileResponse(
            file.open("rb"), content_type=content_type, as_attachment=filename is not None, filename=filename or ""
        )
    parameters = {"ResponseContentType": content_type}
    if filename is not None:
        parameters["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    return HttpResponseRedirect(object_store.signed_link(file.storage, file.name, parameters))
