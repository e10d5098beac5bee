"""A prediction job from its files to its predictions: unpacked, ingested privately, the apply stages started.

``send`` hands a QUEUED job to the cpu queue (``catalogue.tasks.prepare_prediction_job``);
``prepare`` unpacks its sample into a temporary folder (:mod:`pipeline.bundles.archive`:
unsafe entries refused, every fault listed), ingests it as the job's own private survey
with the ingest's checks and fault report, and starts the model set's apply stages on it
through the one start path, exactly as applying a set to an ingested survey does. From
then on the workflow is the job's progress, and a worker killed mid-stage is recovered as
any run is. A worker killed while preparing: the broker hands the task to another worker
(late acknowledgement), and the reaper sends it again if its message was lost; preparing
is idempotent (the ingest upserts).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from catalogue import limits, registry
from catalogue.models import PredictionJob, Run, Survey
from catalogue.orchestration.start import start
from catalogue.selectors import prediction_jobs as jobs
from catalogue.selectors.clock import database_now
from catalogue.services import prediction_jobs as job_files
from catalogue.services import runs
from catalogue.services.ingest import ingest_bundle
from pipeline.bundles import archive
from pipeline.bundles.reader import CATALOGUE_NAMES, BundleError, read_table

log = logging.getLogger(__name__)
TASK_NAME = "catalogue.tasks.prepare_prediction_job"
#: The share of a job's progress its preparation (unpacking and ingest) stands for.
PREPARE_SHARE = 0.1
#: A table's file ending -> the one the ingest looks for (``CATALOGUE_NAMES``).
CATALOGUE_SUFFIX = {".fit": ".fits", ".xml": ".vot", ".votable": ".vot"}
#: A preparing job whose worker has not beaten for this long lost it (the reaper sends it again).
PREPARE_SILENCE_S = 120.0


def survey_name(job: PredictionJob) -> str:
    return f"job-{job.id}"


def send(job: PredictionJob) -> None:
    """Send the job's preparation to the cpu queue (after the transaction that made it commits)."""
    from catalogue.celery import app

    def go() -> None:
        try:
            app.tasks[TASK_NAME].apply_async(args=[str(job.pk)])
        except runs.TRANSIENT_ERRORS as exc:  # the broker is away: the reaper sends it again
            log.warning("prediction job %s not sent (%s): the reaper sends it again", job.pk, exc)
            return
        PredictionJob.objects.filter(pk=job.pk).update(sent=Now())

    if app.conf.task_always_eager:
        PredictionJob.objects.filter(pk=job.pk).update(sent=Now())
        app.tasks[TASK_NAME].apply_async(args=[str(job.pk)])
    else:
        transaction.on_commit(go)


def _claim(job_id) -> PredictionJob | None:
    """Take the job for this worker: QUEUED, or preparing under a worker that went silent."""
    now = database_now()
    silent = now - timedelta(seconds=PREPARE_SILENCE_S)
    claimable = Q(phase=PredictionJob.Phase.QUEUED) | Q(
        phase=PredictionJob.Phase.EXECUTING, workflow__isnull=True, heartbeat__lt=silent
    )
    taken = PredictionJob.objects.filter(claimable, pk=job_id).update(
        phase=PredictionJob.Phase.EXECUTING, heartbeat=now, message="unpacking the sample"
    )
    if not taken:
        return None
    PredictionJob.objects.filter(pk=job_id, started__isnull=True).update(started=now)
    return PredictionJob.objects.select_related("owner", "model_set").get(pk=job_id)


def _beat(job_id, message: str) -> None:
    PredictionJob.objects.filter(pk=job_id, phase=PredictionJob.Phase.EXECUTING).update(heartbeat=Now(), message=message[:300])


def prepare(job_id: str) -> str:
    """Unpack, ingest and start the job's workflow; the phase it is in afterwards."""
    job = _claim(job_id)
    if job is None:
        found = PredictionJob.objects.filter(pk=job_id).values_list("phase", flat=True).first()
        return found or "DELETED"
    try:
        with tempfile.TemporaryDirectory(prefix="morphomass-job-") as tmp:
            bundle = Path(tmp) / "bundle"
            faults = _unpack(job, bundle)
            _beat(job.pk, "ingesting the sample")
            report = ingest_bundle(
                bundle,
                survey_name(job),
                owner=job.owner,
                progress=lambda step, done, total: _beat(job.pk, f"ingest: {step} {done}/{total}"),
            )
        survey = Survey.objects.get(name=survey_name(job))
        table_file = PurePosixPath(job.table_name).name  # the user's name for the table the ingest calls catalogue.*
        faults += [
            {**{k: r.get(k) for k in ("kind", "reason", "objid", "row")}, "file": _users_name(r.get("file", ""), table_file)}
            for r in report.rejections
        ]
        PredictionJob.objects.filter(pk=job.pk).update(survey=survey, faults=faults, message="starting the model set's stages")
        if job.model_set is None:
            raise ValueError("the job's model set was deleted before it could run")
        if PredictionJob.objects.filter(pk=job.pk, phase=PredictionJob.Phase.ABORTED).exists():
            return PredictionJob.Phase.ABORTED  # cancelled while it was unpacked: nothing is started
        try:
            workflow = start(survey, model_set=job.model_set, user=job.owner)
        except runs.RunConflict as conflict:  # a worker lost after it started them: the job takes them up
            if conflict.active.survey_id != survey.pk or conflict.active.stage != registry.WORKFLOW:
                raise
            workflow = conflict.active
    except (BundleError, archive.ArchiveError, ValueError, runs.RunConflict) as exc:
        _end(job.pk, PredictionJob.Phase.ERROR, str(exc))
        return PredictionJob.Phase.ERROR
    except Exception as exc:
        if isinstance(exc, runs.TRANSIENT_ERRORS):
            raise  # the task retries; the job stays claimed and the reaper sends it again if it must
        _end(job.pk, PredictionJob.Phase.ERROR, f"the service failed while preparing the job ({type(exc).__name__}: {exc})")
        raise
    PredictionJob.objects.filter(pk=job.pk, phase=PredictionJob.Phase.EXECUTING).update(
        workflow=workflow, message=workflow.message or "running"
    )
    refresh(PredictionJob.objects.get(pk=job.pk))
    return PredictionJob.objects.values_list("phase", flat=True).get(pk=job.pk)


def _users_name(file: str, table_file: str) -> str:
    return table_file if table_file and file.startswith("catalogue.") else file


def _unpack(job: PredictionJob, bundle: Path) -> list[dict]:
    """The job's uploads as a bundle folder (catalogue plus images/); the faults of what was left out."""
    flat = bundle.parent / "unpacked"
    flat.mkdir()
    faults: list[archive.Fault] = []
    for n, name in enumerate(job.uploads, 1):
        original = PurePosixPath(name).name.split("_", 1)[-1]
        with default_storage.open(name, "rb") as handle:
            local = bundle.parent / f"upload-{n}"
            with open(local, "wb") as out:
                for block in iter(lambda h=handle: h.read(archive.COPY_BLOCK), b""):
                    out.write(block)
        if PurePosixPath(original).suffix.lower() in job_files.FITS_SUFFIXES:
            base, fault = archive.wanted(archive.Entry(original, local.stat().st_size, "file"), None)
            if fault is not None:
                faults.append(fault)
            elif base is not None and (flat / base).exists():
                faults.append(archive.Fault("duplicate_entry", f"{base} was sent twice: the first is used", original))
            elif base is not None:
                local.rename(flat / base)
            continue
        faults += archive.extract(local, flat, progress=lambda done, total: _beat(job.pk, f"unpacking: {done}/{total} entries"))
        local.unlink()
    (bundle / "images").mkdir(parents=True)
    table = _place_table(job, flat, bundle)
    objids = _objids(table)
    for path in sorted(flat.iterdir()):
        match = archive.CUTOUT_NAME.match(path.name)
        if match is None:
            path.rename(bundle / path.name)
        elif int(match["objid"]) in objids:
            path.rename(bundle / "images" / path.name)
        else:
            faults.append(
                archive.Fault("not_in_table", f"objid {match['objid']} is not in the table", path.name, int(match["objid"]))
            )
    return [f.as_dict() for f in faults]


def _place_table(job: PredictionJob, flat: Path, bundle: Path) -> Path:
    """The sample's table as the bundle's catalogue: the uploaded one, else the archive's catalogue."""
    if job.table_name:
        suffix = PurePosixPath(job.table_name).suffix.lower()
        target = bundle / f"catalogue{CATALOGUE_SUFFIX.get(suffix, suffix)}"
        with default_storage.open(job.table_name, "rb") as handle, open(target, "wb") as out:
            out.write(handle.read())
        for stale in flat.glob("catalogue.*"):
            stale.unlink()  # the uploaded table wins over one in the archive
        return target
    for name in CATALOGUE_NAMES:
        if (flat / name).exists():
            return flat / name
    raise BundleError("the sample has no table: neither a 'table' upload nor a catalogue in the archive")


def _objids(table_path: Path) -> set[int]:
    table = read_table(table_path)
    if "objid" not in table.colnames:
        raise BundleError(f"{table_path.name} has no objid column")
    found = set()
    for value in table["objid"].tolist():
        try:
            found.add(int(str(value).strip()))
        except ValueError:
            continue
    return found


def _end(job_id, phase: str, error: str = "") -> None:
    PredictionJob.objects.filter(pk=job_id).exclude(phase=PredictionJob.Phase.ABORTED).update(
        phase=phase, error=error[:5000], finished=Now(), message=error[:300] if error else phase.lower()
    )


def refresh(job: PredictionJob) -> PredictionJob:
    """Bring the job's phase and message up to date with its workflow (read when a job is shown)."""
    if job.phase != PredictionJob.Phase.EXECUTING or job.workflow_id is None:
        return job
    workflow = Run.objects.get(pk=job.workflow_id)
    ends = {
        Run.Status.SUCCEEDED: PredictionJob.Phase.COMPLETED,
        Run.Status.FAILED: PredictionJob.Phase.ERROR,
        Run.Status.CANCELLED: PredictionJob.Phase.ABORTED,
    }
    if workflow.status in ends:
        error = workflow.error or workflow.message if workflow.status == Run.Status.FAILED else ""
        _end(job.pk, ends[workflow.status], error)
        if workflow.status == Run.Status.SUCCEEDED:
            PredictionJob.objects.filter(pk=job.pk).update(message="done")
    else:
        PredictionJob.objects.filter(pk=job.pk).update(message=workflow.message[:300])
    job.refresh_from_db()
    return job


def progress(job: PredictionJob) -> float:
    """The fraction of the job done, 0-1: its preparation, then its workflow's stages."""
    if job.phase == PredictionJob.Phase.COMPLETED:
        return 1.0
    if job.workflow_id is None:
        return 0.0 if job.phase == PredictionJob.Phase.QUEUED else PREPARE_SHARE / 2
    stages = jobs.stage_progress(job)
    done = sum((run.progress if run is not None else 0.0) for _, run in stages) / max(len(stages), 1)
    return PREPARE_SHARE + (1 - PREPARE_SHARE) * done


def cancel(job: PredictionJob, user=None) -> PredictionJob:
    """Stop a queued or running job (its workflow is cancelled); a finished job is left as it is."""
    if job.phase not in PredictionJob.ACTIVE:
        return job
    PredictionJob.objects.filter(pk=job.pk).update(phase=PredictionJob.Phase.ABORTED, finished=Now(), message="cancelled")
    if job.workflow_id is not None:
        workflow = Run.objects.get(pk=job.workflow_id)
        if workflow.status in Run.ACTIVE:
            runs.cancel_run(workflow, user=user)
    job.refresh_from_db()
    return job


def remove(job: PredictionJob, user=None) -> None:
    """Cancel the job if it runs, then delete it with its galaxies and files."""
    cancel(job, user)
    job_files.delete(job)


def reap(now=None) -> dict[str, int]:
    """Send again the jobs whose preparation no worker took (or whose worker went silent), end the jobs whose
    workflow ended, and delete the expired ones (the reaper's minute)."""
    now = now or database_now()
    resend_after = timedelta(seconds=limits.resend_after_s())
    lost = list(jobs.jobs_to_send_again(now - resend_after)) + list(
        jobs.stalled_preparations(now - timedelta(seconds=PREPARE_SILENCE_S))
    )
    for job in lost:
        send(job)
    for job in PredictionJob.objects.filter(phase=PredictionJob.Phase.EXECUTING, workflow__isnull=False):
        refresh(job)
    return {"sent_again": len(lost), "deleted": job_files.purge_expired()}
