"""TAP's asynchronous jobs (UWS 1.1): made PENDING, queued on the cpu queue, run, aborted, destroyed.

A job's query runs in the task ``catalogue.tasks.tap_job`` under the same read-only guard
as a sync query, with the job's execution duration as its statement timeout; its result is
written to the media storage (``tap/<job id>/result.<suffix>``), beside the tables it
uploaded. ABORT cancels the query in PostgreSQL (the backend's pid is kept while it executes). Jobs past their destruction time
are deleted, with their results, whenever jobs are listed or made and by the reaper.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from catalogue.models import TapJob
from catalogue.tap import query, uploads
from catalogue.tap.adql import AdqlError

log = logging.getLogger(__name__)
TASK_NAME = "catalogue.tasks.tap_job"


class JobError(ValueError):
    """A job cannot do what was asked (a bad parameter, a phase that does not allow it)."""


def maxrec(value: str | None) -> int:
    """MAXREC as given (the default when absent), at most the service's limit."""
    if value in (None, ""):
        return settings.TAP_MAXREC_DEFAULT
    try:
        number = int(value)
    except ValueError:
        raise JobError(f"MAXREC={value!r} is not a whole number") from None
    if number < 0:
        raise JobError(f"MAXREC={number} is negative")
    return min(number, settings.TAP_MAXREC_LIMIT)


def check_parameters(params: dict[str, str]) -> None:
    """Refuse what TAP does not allow or this service does not serve, naming the parameter."""
    request = params.get("REQUEST", "doQuery")
    if request.lower() != "doquery":
        raise JobError(f"REQUEST={request!r} is not served: doQuery")
    lang = params.get("LANG", "ADQL")
    if lang.upper() not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
        raise JobError(f"LANG={lang!r} is not served: ADQL")
    if params.get("UPLOAD"):
        uploads.references(params["UPLOAD"])
    query.output_format(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
    maxrec(params.get("MAXREC"))


def create(params: dict[str, str], owner, tables: dict[str, bytes] | None = None, base_url: str = "") -> TapJob:
    """A PENDING job of ``params`` (TAP's parameters, names in upper case) and its uploaded ``tables``.

    The parameters are checked when the job runs: a bad one ends the job in ERROR with the
    reason (UWS makes the job first), rather than refusing to make it. The uploads are kept in
    the media storage until the job goes.
    """
    purge_expired()
    try:
        rows = maxrec(params.get("MAXREC"))
    except JobError:
        rows = settings.TAP_MAXREC_DEFAULT
    job = TapJob.objects.create(
        owner=owner if owner is not None and owner.is_authenticated else None,
        run_id=params.get("RUNID", "")[:100],
        query=params.get("QUERY", ""),
        lang=params.get("LANG", "ADQL"),
        response_format=params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable",
        maxrec=rows,
        parameters=params,
        execution_duration=settings.TAP_ASYNC_DURATION_S,
        destruction=timezone.now() + timedelta(days=settings.TAP_JOB_DAYS),
        base_url=base_url,
    )
    if tables:
        _keep_uploads(job, tables)
    return job


def _keep_uploads(job: TapJob, tables: dict[str, bytes]) -> None:
    """Store a job's uploaded tables (replacing any of the same name) for when it runs."""
    kept = dict(job.uploads)
    for name, data in tables.items():
        if name in kept:
            default_storage.delete(kept[name])
        kept[name] = default_storage.save(f"tap/{job.pk}/upload_{name}.dat", ContentFile(data))
    job.uploads = kept
    job.save(update_fields=["uploads"])


def _uploaded(job: TapJob) -> list[uploads.Upload]:
    """The tables the job's UPLOAD names, read from the storage (a name without its table is an error)."""
    if not job.parameters.get("UPLOAD"):
        return []
    found = []
    for name, part in uploads.references(job.parameters["UPLOAD"]):
        if name not in job.uploads:
            raise JobError(f"UPLOAD {name!r} names part {part!r}, but the job was given no table of that name")
        with default_storage.open(job.uploads[name], "rb") as handle:
            found.append(uploads.read(name, handle.read()))
    return found


def update_parameters(job: TapJob, params: dict[str, str], tables: dict[str, bytes] | None = None) -> None:
    """New parameters (and uploaded tables) for a PENDING job (UWS: POST to the job's parameters)."""
    if job.phase != TapJob.Phase.PENDING:
        raise JobError(f"the job is {job.phase}: parameters change only while it is PENDING")
    if tables:
        _keep_uploads(job, tables)
    merged = {**job.parameters, **params}
    job.parameters = merged
    job.query = merged.get("QUERY", "")
    job.lang = merged.get("LANG", "ADQL")
    job.response_format = merged.get("RESPONSEFORMAT") or merged.get("FORMAT") or "votable"
    job.maxrec = maxrec(merged.get("MAXREC")) if merged.get("MAXREC", "").lstrip("-").isdigit() else job.maxrec
    job.run_id = merged.get("RUNID", "")[:100]
    job.save()


def run(job: TapJob) -> None:
    """PHASE=RUN: queue a PENDING job (a job already queued, running or done is left as it is)."""
    if job.phase != TapJob.Phase.PENDING:
        if job.phase in (TapJob.Phase.QUEUED, TapJob.Phase.EXECUTING, TapJob.Phase.COMPLETED):
            return
        raise JobError(f"the job is {job.phase}: it cannot run again")
    from catalogue.celery import app

    updated = TapJob.objects.filter(pk=job.pk, phase=TapJob.Phase.PENDING).update(phase=TapJob.Phase.QUEUED)
    if not updated:
        return
    task = app.tasks[TASK_NAME]
    if app.conf.task_always_eager:
        task.apply_async(args=[str(job.pk)])
    else:
        transaction.on_commit(lambda: task.apply_async(args=[str(job.pk)]))


def abort(job: TapJob) -> None:
    """PHASE=ABORT: stop a job that has not finished; a running query is cancelled in PostgreSQL."""
    if job.phase in (TapJob.Phase.COMPLETED, TapJob.Phase.ERROR, TapJob.Phase.ABORTED):
        return
    pid = job.backend_pid
    TapJob.objects.filter(pk=job.pk).update(phase=TapJob.Phase.ABORTED, finished=timezone.now())
    if pid and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [pid])


def destroy(job: TapJob) -> None:
    """Delete a job and its result (a running query is aborted first)."""
    abort(job)
    if job.result:
        job.result.delete(save=False)
    for name in job.uploads.values():
        default_storage.delete(name)
    job.delete()


def purge_expired() -> int:
    """Delete the jobs past their destruction time; how many."""
    expired = list(TapJob.objects.filter(destruction__lt=timezone.now()))
    for job in expired:
        destroy(job)
    return len(expired)


def reap() -> dict[str, int]:
    """Fail jobs whose worker died (executing past their duration and a grace), delete expired ones."""
    grace = timedelta(seconds=settings.TAP_REAP_GRACE_S)
    stale = [
        job.pk
        for job in TapJob.objects.filter(phase=TapJob.Phase.EXECUTING, started__isnull=False)
        if job.started + timedelta(seconds=job.execution_duration) + grace < timezone.now()
    ]
    failed = TapJob.objects.filter(pk__in=stale, phase=TapJob.Phase.EXECUTING).update(
        phase=TapJob.Phase.ERROR, error="the worker running the query stopped answering", finished=timezone.now()
    )
    return {"failed": failed, "destroyed": purge_expired()}


def _set(job_id, **values) -> int:
    """Update a job unless it was aborted meanwhile (an abort is final)."""
    return TapJob.objects.filter(pk=job_id).exclude(phase=TapJob.Phase.ABORTED).update(**values)


def execute(job_id: str) -> str:
    """Run a QUEUED job's query and keep its result: the phase it ends in."""
    job = TapJob.objects.filter(pk=job_id).first()
    if job is None or job.phase != TapJob.Phase.QUEUED:
        return job.phase if job is not None else "DELETED"
    pid = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
    if not _set(job.pk, phase=TapJob.Phase.EXECUTING, started=timezone.now(), backend_pid=pid):
        return TapJob.Phase.ABORTED
    try:
        check_parameters(job.parameters)
        fmt = query.output_format(job.response_format)
        prepared = query.prepare(job.query, job.maxrec, job.execution_duration, _uploaded(job))
        prepared.base = job.base_url
        suffix = query.CONTENT_TYPES[fmt][1]
        with tempfile.TemporaryFile() as handle:
            for piece in query.write(prepared, fmt, job.execution_duration):
                handle.write(piece)
            if prepared.error:  # met while the rows streamed (a timeout, a cancel)
                raise query.QueryError(prepared.error)
            handle.seek(0)
            job.result.save(f"{job.pk}/result.{suffix}", File(handle), save=False)
    except (AdqlError, JobError, uploads.UploadError, query.QueryError, DatabaseError) as exc:
        message = str(exc) if not isinstance(exc, DatabaseError) else query.database_message(exc)
        if not _set(job.pk, phase=TapJob.Phase.ERROR, error=message, finished=timezone.now(), backend_pid=None):
            return TapJob.Phase.ABORTED  # the abort cancelled the query: the error is its echo
        return TapJob.Phase.ERROR
    except Exception as exc:  # a time limit, a full disk: the job says so, the worker logs the rest
        _set(
            job.pk,
            phase=TapJob.Phase.ERROR,
            error=f"the service failed while running the query ({exc.__class__.__name__}: {exc})"[:2000],
            finished=timezone.now(),
            backend_pid=None,
        )
        raise
    if not _set(
        job.pk,
        phase=TapJob.Phase.COMPLETED,
        result=job.result.name,
        rows=prepared.rows,
        overflow=prepared.overflow,
        finished=timezone.now(),
        backend_pid=None,
    ):
        job.result.delete(save=False)  # aborted while it wrote: nothing is kept
        return TapJob.Phase.ABORTED
    return TapJob.Phase.COMPLETED
