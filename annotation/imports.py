"""Large prompt and preference files, imported in the background as an ImportJob (on the default worker; the
import_prompts command runs the same job in its own process).

Two passes over the file keep memory flat and never hold SQLite's single write lock for long:
1. check: every row is parsed and validated and nothing is written; a broken row fails the job with its line;
2. write: the rows are parsed again and written a chunk (services.BATCH_SIZE rows) per transaction, each created
   prompt, candidate and pair tagged with the job.
If the write pass fails, is cancelled, or its worker dies (the reaper calls ``import_discard``), everything the job
wrote is deleted again, so a file is imported whole or not at all. What a running write pass has written is visible
(a generation job launched meanwhile may use it, and loses it if the import then fails).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from annotation import importing
from annotation.importing import ImportedRow
from annotation.models import Demonstration, ImportJob, PreferencePair, Project, Prompt
from annotation.services import BATCH_SIZE, ImportReport, chunks_of, import_chunk, import_limits
from config import artifacts
from config.jobs import job_dispatch_on_commit, job_update, run_job, stop_if_cancelled
from generation.models import Candidate

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5  # how often a pass saves its progress (and looks for a cancel)


def import_in_background(size_bytes: int) -> bool:
    """Whether an upload of this size is imported by a background job rather than within the request."""
    return size_bytes > settings.PREFLOOP_IMPORT_IN_REQUEST_BYTES


def import_job_create(
    *, project: Project, upload: UploadedFile, heldout_fraction: float = 0.0, source: str = "",
    requested_by: AbstractUser | None = None,
) -> ImportJob:
    """Keep the upload in the artifact store (imports/upload-<random>/upload) and queue its import on the default
    worker, which may run on another machine."""
    _check_fraction(heldout_fraction)
    settings.IMPORTS_DIR.mkdir(parents=True, exist_ok=True)
    # Stored before the row exists: a failed copy (a full disk, a store that does not answer) leaves no job, and no
    # write lock is held meanwhile.
    incoming = Path(tempfile.mkdtemp(prefix="upload-", dir=settings.IMPORTS_DIR))
    try:
        with open(incoming / "upload", "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        size = (incoming / "upload").stat().st_size
        stored = artifacts.publish(incoming, f"imports/{incoming.name}", move=True)
        job = ImportJob.objects.create(
            project=project, filename=Path(upload.name or "upload").name[:200], source=(source or upload.name or "")[:200],
            heldout_fraction=heldout_fraction, requested_by=requested_by, file_path=artifacts.join(stored, "upload"),
            file_is_upload=True, kb_total=2 * _kb(size),
        )
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    job_dispatch_on_commit(job)
    return job


def import_job_for_file(
    *, project: Project, path: Path, heldout_fraction: float = 0.0, source: str = "", requested_by: AbstractUser | None = None,
) -> ImportJob:
    """An import of a file on this machine (the command line), to run in this process with ``import_run`` (so it is
    marked dispatched: the reaper must not send it to a worker)."""
    _check_fraction(heldout_fraction)
    job = ImportJob.objects.create(
        project=project, filename=path.name[:200], source=(source or str(path))[:200], heldout_fraction=heldout_fraction,
        requested_by=requested_by, dispatched_at=timezone.now(),
    )
    _set_file(job, path, is_upload=False)
    return job


def _check_fraction(heldout_fraction: float) -> None:
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValidationError("The held-out fraction must be at least 0 and below 1.")


def _set_file(job: ImportJob, path: Path, is_upload: bool) -> None:
    job.file_path, job.file_is_upload = str(path), is_upload
    job.kb_total = 2 * _kb(path.stat().st_size)
    job.save(update_fields=["file_path", "file_is_upload", "kb_total"])


def import_run(job_id: int) -> ImportJob:
    """Check, then write, the whole file in this process (the default worker's task, or the command line)."""
    try:
        return run_job(ImportJob, job_id, work=_import)
    finally:
        _forget_upload(ImportJob.objects.get(pk=job_id))


def _import(job: ImportJob) -> dict:
    try:
        rows = _check(job)
    except importing.ImportFileError as exc:
        job_update(job, error_line=exc.line or None)
        raise
    job_update(job, phase=ImportJob.Phase.WRITING, rows_total=rows)
    try:
        report = _write(job)
    except BaseException:
        _discard_rows(job.pk)
        raise
    return {**_report_fields(report), "kb_done": job.kb_total}


def _check(job: ImportJob) -> int:
    """Parse and validate every row; nothing is written. Returns the number of rows."""
    job_update(job, phase=ImportJob.Phase.CHECKING)
    rows = 0
    with artifacts.open_file(job.file_path) as stream:
        for rows, _ in enumerate(_rows_with_progress(job, stream, kb_before=0), 1):
            pass
    return rows


def _write(job: ImportJob) -> ImportReport:
    report = ImportReport()
    project = job.project
    with artifacts.open_file(job.file_path) as stream:
        for chunk in chunks_of(_rows_with_progress(job, stream, kb_before=job.kb_total // 2), BATCH_SIZE):
            with transaction.atomic():
                report += import_chunk(project, chunk, job.source, job.heldout_fraction, import_job=job)
            job_update(job, **_report_fields(report))
    return report


def _rows_with_progress(job: ImportJob, stream: IO[bytes], kb_before: int) -> Iterator[ImportedRow]:
    """The file's rows, saving how far the pass has read (and stopping on a cancel) every PROGRESS_SECONDS."""
    saved_at = time.monotonic()
    for row in importing.read_rows(stream, job.filename, import_limits()):
        yield row
        if time.monotonic() - saved_at >= PROGRESS_SECONDS:
            stop_if_cancelled(job)
            job_update(job, kb_done=kb_before + _kb(stream.tell()))
            saved_at = time.monotonic()


def _report_fields(report: ImportReport) -> dict:
    fields = asdict(report)
    return {"rows_written": fields.pop("rows"), **fields}


def import_report(job: ImportJob) -> ImportReport:
    return ImportReport(
        rows=job.rows_written, prompts_created=job.prompts_created, pairs_created=job.pairs_created,
        duplicates_skipped=job.duplicates_skipped, identical_pairs_skipped=job.identical_pairs_skipped,
        demonstrations_created=job.demonstrations_created,
    )


def _kb(size_bytes: int) -> int:
    return (size_bytes + 1023) // 1024


# --- undoing a failed import -----------------------------------------------------------------------------------------


def import_discard(job_id: int) -> None:
    """Remove what a failed import wrote, and its upload (the reaper calls it for an import whose worker died)."""
    _discard_rows(job_id)
    _forget_upload(ImportJob.objects.get(pk=job_id))


def _discard_rows(job_id: int) -> None:
    """Pairs, demonstrations, candidates, then prompts the import created, a batch per transaction (short write locks)."""
    for model in (PreferencePair, Demonstration, Candidate, Prompt):
        while True:
            batch = list(model.objects.filter(import_job_id=job_id).values_list("pk", flat=True)[:BATCH_SIZE])
            if not batch:
                break
            with transaction.atomic():
                model.objects.filter(pk__in=batch).delete()


def _forget_upload(job: ImportJob) -> None:
    if job.file_is_upload and job.status not in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING):
        try:
            artifacts.remove(artifacts.parent(job.file_path))
        except Exception:  # noqa: BLE001 - the import is over either way; a leftover upload costs only space
            logger.warning("Could not delete the upload of import job %s at %s", job.pk, job.file_path, exc_info=True)
