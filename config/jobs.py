"""The lifecycle every job row shares (generation jobs, training runs, scoring jobs, exports): claiming a queued row,
cancelling, and heartbeats, how a dead worker is told from a quiet one.

A job row with a ``heartbeat_at`` column is touched from a thread every HEARTBEAT_SECONDS while the job runs, also
through one long library call (vLLM generating a whole job, a slow training step). A running row whose heartbeat is
older than HEARTBEAT_TIMEOUT lost its worker.
"""

import threading
import time
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

HEARTBEAT_SECONDS = 30
HEARTBEAT_TIMEOUT = timedelta(minutes=5)


class Heartbeat:
    def __init__(self, model: type[Model], pk: int):
        self.rows = model.objects.filter(pk=pk)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_SECONDS):
                self.rows.update(heartbeat_at=timezone.now())
        finally:
            connection.close()


def reap_silent(running: QuerySet, *, error: str, failed_status: str = "failed") -> int:
    """Mark running rows whose worker stopped beating as failed; returns how many."""
    stale = running.filter(heartbeat_at__lt=timezone.now() - HEARTBEAT_TIMEOUT)
    return stale.update(status=failed_status, error=error, finished_at=timezone.now())


def claim_queued(model: type[Model], pk: int, *, worker_died: str) -> Model | None:
    """Mark a queued job row running and return it; None when there is nothing to run. Tasks are acknowledged late,
    so a row delivered again while "running" lost its worker midway: it is marked failed instead."""
    now = timezone.now()
    with transaction.atomic():
        job = model.objects.select_for_update().filter(pk=pk).first()
        if job is not None and job.status == "running":
            model.objects.filter(pk=pk).update(status="failed", error=worker_died, finished_at=now)
            return None
        if job is None or job.status != "queued":
            return None  # cancelled before it started
        job.status, job.started_at, job.heartbeat_at = "running", now, now
        job.save(update_fields=["status", "started_at", "heartbeat_at"])
    return job


def cancel_requested(model: type[Model], pk: int, *, noun: str = "job") -> Model:
    """A queued job is cancelled at once; a running one is asked to stop at its next check (it keeps what it did)."""
    now = timezone.now()
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=pk)
        if job.status == "queued":
            job.status, job.finished_at = "cancelled", now
        elif job.status == "running":
            job.cancel_requested = True
        else:
            raise ValidationError(f"The {noun} is already {job.get_status_display().lower()}.")
        job.save(update_fields=["status", "cancel_requested", "finished_at"])
    return job


FINISHED = ("succeeded", "failed", "cancelled")


def follow_until_finished(job: Model, describe, write, poll_seconds: float = 1.0) -> Model:
    """For the command line: write ``describe(job)`` whenever it changes, until the job row is finished."""
    last = None
    while True:
        job.refresh_from_db()
        line = describe(job)
        if line != last:
            write(line)
            last = line
        if job.status in FINISHED:
            return job
        time.sleep(poll_seconds)
