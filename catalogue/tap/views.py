"""TAP 1.1 at /tap: sync and async (UWS 1.1) queries, VOSI capabilities, availability and tables.

Parameter names are case-insensitive (TAP); values come from the query string and, for
POST, the form. Errors are TAP error VOTables (INFO QUERY_STATUS=ERROR) with a 4xx status;
the API's authentication and throttles apply, and a throttled request gets 429 with
Retry-After and the same kind of document. On the SQLite default every endpoint answers
that TAP needs PostgreSQL.
"""

from __future__ import annotations

import time
from datetime import UTC, timedelta

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from catalogue import selectors
from catalogue.api.downloads import stored_file
from catalogue.api.vo_refusals import refusal
from catalogue.models import TapJob
from catalogue.tap import datalink, documents, examples, jobs, query, schema, uploads
from catalogue.tap.adql import AdqlError

NEEDS_POSTGRESQL = "TAP needs PostgreSQL: run the service with DATABASE_URL=postgres://... (docs/querying.md)"
#: The longest a job GET with WAIT blocks (UWS 1.1 lets the service choose).
MAX_WAIT_S = 30.0


def tap_error(message: str, status: int = 400) -> HttpResponse:
    return HttpResponse(documents.error_votable(message), content_type=documents.VOTABLE_TYPE, status=status)


def _text(value: str, status: int = 200) -> HttpResponse:
    return HttpResponse(value, content_type="text/plain; charset=utf-8", status=status)


def _xml(body: bytes, status: int = 200) -> HttpResponse:
    return HttpResponse(body, content_type=documents.XML_TYPE, status=status)


class TapView(APIView):
    """A TAP endpoint: the API's authentication and throttles, answers in TAP's documents only."""

    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle, UserRateThrottle]
    parser_classes = [FormParser, MultiPartParser]
    needs_database = True

    def perform_content_negotiation(self, request, force=False):  # noqa: ARG002 - DRF's signature
        """Never 406: TAP answers in the format RESPONSEFORMAT names (DALI), whatever ``Accept`` says
        (astroquery sends ``Accept: text/plain``)."""
        return super().perform_content_negotiation(request, force=True)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.needs_database and connection.vendor != "postgresql":
            raise _Refused(NEEDS_POSTGRESQL, 501)

    def params(self, request) -> dict[str, str]:
        """TAP's parameters, names in upper case; a NUL byte anywhere is refused."""
        found: dict[str, str] = {}
        sources = [request.query_params] + ([request.data] if request.method == "POST" else [])
        for source in sources:
            for key in source:
                value = source.get(key)
                if not isinstance(value, str):
                    continue
                if "\x00" in key or "\x00" in value:
                    raise _Refused(f"parameter {key.replace(chr(0), '')!r} contains a NUL byte")
                found[key.upper()] = value
        return found

    def handle_exception(self, exc: Exception) -> HttpResponse:
        if isinstance(exc, _Refused):
            return tap_error(exc.message, exc.status)
        if isinstance(exc, (AdqlError, jobs.JobError, query.QueryError, uploads.UploadError)):
            return tap_error(str(exc))
        return refusal(exc, tap_error) or super().handle_exception(exc)


def _upload_parts(request, params: dict[str, str]) -> dict[str, bytes]:
    """The tables UPLOAD names, as bytes: from the request's parts (``name,param:part``, sizes checked
    first) or fetched (``name,https://...``)."""
    if not params.get("UPLOAD"):
        return {}
    parts: dict[str, bytes] = {}
    for name, part in uploads.references(params["UPLOAD"]):
        if uploads.is_url(part):
            parts[name] = uploads.fetch(name, part)
            continue
        item = request.FILES.get(part)
        if item is not None:
            uploads.check_size(name, item.size)
            parts[name] = item.read()
            continue
        inline = request.data.get(part) if request.method == "POST" else None
        if not isinstance(inline, str):
            raise _Refused(
                f"UPLOAD {name!r} names part {part!r}, but the request has no part of that name"
                " (POST the table as multipart/form-data)"
            )
        parts[name] = inline.encode()
        uploads.check_size(name, len(parts[name]))
    return parts


class _Refused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _base(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@extend_schema(exclude=True)
class Root(TapView):
    """/tap: what is where (clients append the endpoints to this base)."""

    needs_database = False

    def get(self, request):
        base = f"{_base(request)}/tap"
        lines = [
            "MorphoMass TAP 1.1 service (ADQL 2.0). Endpoints:",
            *(f"  {base}/{name}" for name in ("sync", "async", "capabilities", "availability", "tables")),
            "Tables: SELECT table_name, description FROM TAP_SCHEMA.tables",
            "" if connection.vendor == "postgresql" else NEEDS_POSTGRESQL,
        ]
        return _text("\n".join(lines).rstrip() + "\n")


@extend_schema(exclude=True)
class Sync(TapView):
    """/tap/sync: run a query now and stream its result."""

    def get(self, request):
        return self.run(request)

    def post(self, request):
        return self.run(request)

    def run(self, request):
        params = self.params(request)
        jobs.check_parameters(params)
        if not params.get("QUERY", "").strip():
            raise _Refused("QUERY is required (an ADQL SELECT)")
        fmt = query.output_format(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
        uploaded = [uploads.read(name, data) for name, data in _upload_parts(request, params).items()]
        prepared = query.prepare(params["QUERY"], jobs.maxrec(params.get("MAXREC")), settings.TAP_SYNC_TIMEOUT_S, uploaded)
        prepared.base = _base(request)
        content_type, suffix = query.CONTENT_TYPES[fmt]
        response = StreamingHttpResponse(query.write(prepared, fmt, settings.TAP_SYNC_TIMEOUT_S), content_type=content_type)
        response["Content-Disposition"] = f'inline; filename="result.{suffix}"'
        return response


#: RESPONSEFORMAT values the DataLink endpoint answers (all the same VOTable).
DATALINK_FORMATS = {"", "votable", "application/x-votable+xml", datalink.CONTENT_TYPE}


@extend_schema(exclude=True)
class Links(TapView):
    """/datalink/links: DataLink 1.1's {links} of one or more galaxies (ID=<galaxy_id>, repeated)."""

    needs_database = False

    def get(self, request):
        return self.answer(request)

    def post(self, request):
        return self.answer(request)

    def answer(self, request):
        values = request.query_params.getlist("ID") + (request.data.getlist("ID") if request.method == "POST" else [])
        fmt = "".join((request.query_params.get("RESPONSEFORMAT") or request.data.get("RESPONSEFORMAT") or "").split())
        if fmt.lower() not in DATALINK_FORMATS:
            raise _Refused(f"RESPONSEFORMAT={fmt!r} is not served: the links are a VOTable ({datalink.CONTENT_TYPE})")
        try:
            ids = datalink.requested_ids(values)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        body = datalink.links_votable(datalink.links(ids, _base(request)))
        return HttpResponse(body, content_type=datalink.CONTENT_TYPE)


@extend_schema(exclude=True)
class Examples(TapView):
    """/tap/examples: DALI examples, worked queries a user copies (XHTML with RDFa)."""

    needs_database = False

    def get(self, request):  # noqa: ARG002 - DRF's signature
        return HttpResponse(
            examples.document(selectors.a_predicted_position() or examples.DEFAULT_CENTRE),
            content_type="application/xhtml+xml; charset=utf-8",
        )


@extend_schema(exclude=True)
class Availability(TapView):
    needs_database = False

    def get(self, request):  # noqa: ARG002 - DRF's signature
        if connection.vendor != "postgresql":
            return _xml(documents.availability(False, NEEDS_POSTGRESQL))
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {schema.TAP_SCHEMA}.tables")
                cursor.fetchone()
        except Exception as exc:  # noqa: BLE001 - any failure means not available, said in the note
            return _xml(documents.availability(False, f"the database does not answer: {exc}"))
        return _xml(documents.availability(True, "TAP and the cone search are serving"))


@extend_schema(exclude=True)
class Capabilities(TapView):
    needs_database = False

    def get(self, request):
        return _xml(documents.capabilities(_base(request)))


@extend_schema(exclude=True)
class Tables(TapView):
    """VOSI tables; ``detail=min`` (VOSI 1.1), or astroquery's ``only_tables=true``, leaves the columns out."""

    def get(self, request):
        params = self.params(request)
        brief = params.get("DETAIL", "").lower() == "min" or params.get("ONLY_TABLES", "").lower() == "true"
        return _xml(documents.tableset(_tableset(), columns=not brief))


def _tableset() -> list[dict]:
    """TAP_SCHEMA's rows as schemas -> tables -> columns and keys."""
    with connection.cursor() as cursor:
        ts = schema.TAP_SCHEMA
        cursor.execute(f"SELECT schema_name, description FROM {ts}.schemas ORDER BY schema_index")
        schemas = [{"name": n, "description": d, "tables": []} for n, d in cursor.fetchall()]
        cursor.execute(f"SELECT schema_name, table_name, table_type, description FROM {ts}.tables ORDER BY table_index")
        tables = {
            t: {"schema": s, "name": t, "type": k, "description": d, "columns": [], "keys": []}
            for s, t, k, d in cursor.fetchall()
        }
        cursor.execute(
            f"SELECT table_name, column_name, description, unit, ucd, datatype, arraysize, indexed, std"
            f" FROM {ts}.columns ORDER BY table_name, column_index"
        )
        for row in cursor.fetchall():
            keys = ("name", "description", "unit", "ucd", "datatype", "arraysize", "indexed", "std")
            tables[row[0]]["columns"].append(dict(zip(keys, row[1:], strict=True)))
        cursor.execute(
            f"SELECT k.key_id, k.from_table, k.target_table, k.description, c.from_column, c.target_column"
            f" FROM {ts}.keys k JOIN {ts}.key_columns c ON c.key_id = k.key_id ORDER BY k.key_id"
        )
        for _, from_table, target, description, from_column, target_column in cursor.fetchall():
            tables[from_table]["keys"].append(
                {"target": target, "description": description, "columns": [(from_column, target_column)]}
            )
    by_schema = {s["name"]: s for s in schemas}
    for table in tables.values():
        by_schema[table["schema"]]["tables"].append(table)
    return schemas


# --- async (UWS 1.1) ------------------------------------------------------------------------


def _owned(request, job_id) -> TapJob:
    """The job, if the requester may see it: its owner's alone, or anyone's when it has no owner."""
    job = get_object_or_404(TapJob.objects.select_related("owner"), pk=job_id)
    if job.owner_id is not None and (not request.user.is_authenticated or request.user.pk != job.owner_id):
        raise _Refused(f"no job {job_id}", 404)
    return job


def _job_url(request, job: TapJob) -> str:
    return f"{_base(request)}/tap/async/{job.pk}"


@extend_schema(exclude=True)
class AsyncJobs(TapView):
    """/tap/async: the requester's jobs (GET, with PHASE and LAST filters) and new jobs (POST)."""

    def get(self, request):
        jobs.purge_expired()
        params = self.params(request)
        found = TapJob.objects.select_related("owner")
        found = found.filter(owner=request.user) if request.user.is_authenticated else found.filter(owner__isnull=True)
        if params.get("PHASE"):
            phases = [p.strip().upper() for p in request.query_params.getlist("PHASE", [params["PHASE"]])]
            found = found.filter(phase__in=phases)
        if params.get("AFTER"):
            after = parse_datetime(params["AFTER"])
            if after is None:
                raise _Refused(f"AFTER={params['AFTER']!r} is not an ISO 8601 time")
            found = found.filter(created__gt=after)
        if params.get("LAST"):
            try:
                last = int(params["LAST"])
            except ValueError:
                raise _Refused(f"LAST={params['LAST']!r} is not a whole number") from None
            if last < 1:
                raise _Refused("LAST must be positive")
            found = found.order_by("-created")[:last]
        return _xml(documents.job_list(found[:1000], f"{_base(request)}/tap/async"))

    def post(self, request):
        params = self.params(request)
        phase = params.pop("PHASE", "")
        job = jobs.create(params, request.user, _upload_parts(request, params), base_url=_base(request))
        if phase.upper() == "RUN":
            jobs.run(job)
        elif phase:
            raise _Refused(f"PHASE={phase!r}: a new job takes PHASE=RUN or none")
        return HttpResponseRedirect(_job_url(request, job), status=303)


@extend_schema(exclude=True)
class AsyncJob(TapView):
    """/tap/async/<id>: the job document (GET, with WAIT), deletion (DELETE or POST ACTION=DELETE)."""

    def get(self, request, job_id):
        job = _owned(request, job_id)
        params = self.params(request)
        if params.get("WAIT"):
            job = _wait(job, params["WAIT"], params.get("PHASE"))
        return _xml(documents.job(job, _job_url(request, job)))

    def post(self, request, job_id):
        job = _owned(request, job_id)
        params = self.params(request)
        if params.get("ACTION", "").upper() == "DELETE":
            return self.delete(request, job_id)
        if params.get("PHASE"):
            _set_phase(job, params["PHASE"])
            return HttpResponseRedirect(_job_url(request, job), status=303)
        raise _Refused("POST to a job takes ACTION=DELETE or PHASE=RUN|ABORT")

    def delete(self, request, job_id):
        jobs.destroy(_owned(request, job_id))
        return HttpResponseRedirect(f"{_base(request)}/tap/async", status=303)


def _wait(job: TapJob, raw: str, phase: str | None) -> TapJob:
    """Block while the job is active (and in ``phase``, if given), at most WAIT seconds (-1: the most)."""
    try:
        wait = float(raw)
    except ValueError:
        raise _Refused(f"WAIT={raw!r} is not a number of seconds") from None
    wait = MAX_WAIT_S if wait < 0 else min(wait, MAX_WAIT_S)
    start = job.phase
    active = (TapJob.Phase.PENDING, TapJob.Phase.QUEUED, TapJob.Phase.EXECUTING)
    if start not in active or (phase and phase.upper() != start):
        return job
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.1)
        job.refresh_from_db()
        if job.phase != start:
            break
    return job


def _set_phase(job: TapJob, phase: str) -> None:
    phase = phase.strip().upper()
    if phase == "RUN":
        jobs.run(job)
    elif phase == "ABORT":
        jobs.abort(job)
    else:
        raise _Refused(f"PHASE={phase!r}: takes RUN or ABORT")


@extend_schema(exclude=True)
class AsyncJobPart(TapView):
    """/tap/async/<id>/<part>: phase, executionduration, destruction, quote, error, parameters, results, owner."""

    def get(self, request, job_id, part):
        job = _owned(request, job_id)
        url = _job_url(request, job)
        if part == "phase":
            return _text(job.phase)
        if part == "executionduration":
            return _text(str(job.execution_duration))
        if part == "destruction":
            return _text(documents.iso_time(job.destruction))
        if part == "quote":
            return _text("")
        if part == "owner":
            return _text(job.owner.get_username() if job.owner_id else "")
        if part == "error":
            if job.phase != TapJob.Phase.ERROR:
                raise _Refused(f"the job is {job.phase}: it has no error", 404)
            return tap_error(job.error or "the query failed", status=200)
        if part == "parameters":
            return _xml(documents.parameters(job))
        if part == "results":
            return _xml(documents.results(job, url))
        raise _Refused(f"a job has no {part!r}", 404)

    def post(self, request, job_id, part):
        job = _owned(request, job_id)
        params = self.params(request)
        if part == "phase":
            _set_phase(job, params.get("PHASE", ""))
        elif part == "executionduration":
            job.execution_duration = _seconds(params.get("EXECUTIONDURATION", ""))
            _pending_save(job)
        elif part == "destruction":
            when = parse_datetime(params.get("DESTRUCTION", ""))
            if when is None:
                raise _Refused("DESTRUCTION must be an ISO 8601 time")
            if timezone.is_naive(when):  # ISO 8601 without an offset: UTC, as UWS writes times
                when = timezone.make_aware(when, UTC)
            # a job may go sooner, not later than the service keeps jobs
            job.destruction = min(when, timezone.now() + timedelta(days=settings.TAP_JOB_DAYS))
            job.save(update_fields=["destruction"])
        elif part == "parameters":
            jobs.update_parameters(job, params, _upload_parts(request, params))
        else:
            raise _Refused(f"a job's {part!r} cannot be changed", 405)
        return HttpResponseRedirect(_job_url(request, job), status=303)


def _seconds(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _Refused(f"EXECUTIONDURATION={raw!r} is not a whole number of seconds") from None
    if value <= 0:
        return settings.TAP_ASYNC_DURATION_S
    return min(value, settings.TAP_ASYNC_DURATION_S)


def _pending_save(job: TapJob) -> None:
    if job.phase != TapJob.Phase.PENDING:
        raise _Refused(f"the job is {job.phase}: its duration changes only while it is PENDING")
    job.save(update_fields=["execution_duration"])


@extend_schema(exclude=True)
class AsyncResult(TapView):
    """/tap/async/<id>/results/result: the result file of a completed job."""

    def get(self, request, job_id):
        job = _owned(request, job_id)
        if job.phase != TapJob.Phase.COMPLETED or not job.result:
            raise _Refused(f"the job is {job.phase}: it has no result", 404)
        fmt = query.output_format(job.response_format)
        return stored_file(job.result, query.CONTENT_TYPES[fmt][0])
