"""The one lifecycle of every background job (generation jobs, training runs, scoring jobs, exports, and whatever
kind comes next).

A job kind is a concrete model deriving from ``Job`` (its own fields, plus the few class attributes below that name
its queue, its progress counters and what it works on) and a work function that ``run_job`` calls in the worker:

    claim the queued row -> beat from a thread -> work(job) -> succeeded / cancelled / failed (full traceback)

A running row is touched every ``JOB_HEARTBEAT_SECONDS`` from a thread, also through one long library call (vLLM
generating a whole job, a slow training step). A running row whose heartbeat is older than ``JOB_DEAD_AFTER_SECONDS``
lost its worker: the reaper (``reap_dead_jobs``, run by Celery beat every ``JOB_REAPER_SECONDS`` and before any job
starts) marks it failed with its kind's message. Sooner where the death is seen: `manage.py serve` supervises the
workers and, when one exits, marks the running rows of its processes failed at once (``fail_jobs_of_dead_processes``;
a row names the prefork child that runs it, so serve passes every pid the worker's process group had). Tasks are
acknowledged late, so the message of a job whose worker died may be delivered again: a row that is no longer queued
is never run twice.

A job is sent to the broker after its row commits (``job_dispatch_on_commit``). When the broker cannot be reached the
launch still succeeds: the row stays queued with no ``dispatched_at``, and the reaper sends it again
(``redispatch_undelivered_jobs``) until the broker takes it. A duplicate message is harmless, for the same reason.

This module imports no app: the kinds are found as the installed models deriving from ``Job``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)


class Job(models.Model):
    """The columns every job kind shares. Subclasses set the class attributes below."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, help_text="Why it failed, with the full traceback.")
    device = models.CharField(max_length=20, blank=True, help_text="Where it ran (cpu, cuda, cuda:1), as the job resolved it.")
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process that ran it.")
    gpu = models.CharField(
        max_length=50, blank=True, help_text="The GPU its worker was pinned to (its CUDA_VISIBLE_DEVICES); blank when not pinned."
    )
    load_seconds = models.FloatField(default=0.0, help_text="Time spent loading models (left out of rates and ETAs).")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="When its message reached the broker.")
    dispatch_error = models.CharField(max_length=500, blank=True, help_text="Why the broker did not take its message yet.")

    job_kind: ClassVar[str]  # short name in URLs and filters: "generation", "training", ...
    kind_label: ClassVar[str]  # in sentences: "generation job", "training run"
    queue: ClassVar[str] = "gpu"  # the Celery queue its task is routed to
    task_name: ClassVar[str]  # the Celery task that runs it, given the row's id
    progress_fields: ClassVar[tuple[str, str]]  # (done, total) counters
    progress_unit: ClassVar[str]  # what the counters count: "prompts", "steps"
    # A float field with the done counter plus the finished share of the unit in progress (None: the done counter
    # itself); rates and ETAs use it, so they move within a long unit of work.
    progress_exact_field: ClassVar[str | None] = None
    project_lookup: ClassVar[str] = "project"  # the ORM path from a job to its project(s)
    dead_worker_message: ClassVar[str] = "The worker running this job stopped (killed or crashed)."
    detail_url_name: ClassVar[str]  # the URL name of its page, taking the job's id
    list_select_related: ClassVar[tuple[str, ...]] = ()  # what ``subject`` reads, for lists
    list_prefetch_related: ClassVar[tuple[str, ...]] = ()

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind_label} {self.pk}"

    @property
    def subject(self) -> str:
        """What the job works on, in a few words (for the Jobs page)."""
        return ""

    @classmethod
    def discard_partial_work(cls, pks: list[int]) -> None:
        """Undo what jobs of this kind wrote before their worker died (the reaper calls it); most kinds keep it."""

    @property
    def counts(self) -> tuple[int, int]:
        done, total = self.progress_fields
        return getattr(self, done), getattr(self, total)

    @property
    def done_exact(self) -> float:
        """The done counter, plus the finished share of the unit in progress where the kind records it."""
        done, total = self.counts
        exact = getattr(self, self.progress_exact_field) if self.progress_exact_field else done
        return min(float(total), max(float(done), float(exact or 0)))

    @property
    def ran_on(self) -> str:
        """Where it ran, for lists: "cpu · transformers · worker host:123 · GPU 1" (what ran it, then which process
        on which GPU)."""
        return " · ".join(part for part in (self.ran_with_text, *self.ran_in) if part)

    @property
    def ran_with_text(self) -> str:
        """"cpu · transformers": what ran it, without the process."""
        return " · ".join(part for part in self.ran_with if part)

    @property
    def ran_with(self) -> tuple[str, ...]:
        """The device, as the job resolved it; a kind may add more (its backend)."""
        return (self.device,)

    @property
    def ran_in(self) -> tuple[str, ...]:
        """The worker process and the GPU it was pinned to, as far as known (nothing before the job starts)."""
        worker = (f"worker {self.worker}",) if self.worker else ()
        gpu = (f"GPU {self.gpu}",) if self.gpu else ()
        return worker + gpu

    @property
    def is_active(self) -> bool:
        return self.status in (Job.Status.QUEUED, Job.Status.RUNNING)


FINISHED = (Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED)


def job_kinds() -> list[type[Job]]:
    """Every installed job model, in a fixed order."""
    return sorted((m for m in apps.get_models() if issubclass(m, Job)), key=lambda m: m.job_kind)


def dead_after() -> timedelta:
    return timedelta(seconds=settings.JOB_DEAD_AFTER_SECONDS)


# --- running a job ---------------------------------------------------------------------------------------------------


class JobCancelled(Exception):
    """Raised by a work function that stopped because it was asked to; ``fields`` are saved with the status."""

    def __init__(self, **fields):
        super().__init__("cancelled")
        self.fields = fields


def run_job(
    model: type[Job],
    pk: int,
    work: Callable[[Job], Any],
    succeed: Callable[[Job, Any], dict] | None = None,
) -> Job:
    """Run a queued job to its end in this process and return its row. Never raises for the job's own failure.

    ``work(job)`` does the job; it raises JobCancelled when it stopped on a cancel (see ``stop_if_cancelled``).
    ``succeed(job, result)`` runs in the transaction that marks the job succeeded and returns fields to save with
    it (a registered model commits with its run); by default ``result`` is that dict of fields itself.
    """
    reap_dead_jobs()
    job = _claim(model, pk)
    if job is None:
        return model.objects.get(pk=pk)
    try:
        with Heartbeat(model, pk):
            result = work(job)
        with transaction.atomic():
            fields = succeed(job, result) if succeed else (result or {})
            _end(job, Job.Status.SUCCEEDED, **fields)
    except JobCancelled as stop:
        _end(job, Job.Status.CANCELLED, **stop.fields)
    except Exception as exc:  # noqa: BLE001 - any failure of the model, data or library ends the job, recorded
        logger.exception("%s failed", job)
        _end(job, Job.Status.FAILED, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
    job.refresh_from_db()
    return job


def _claim(model: type[Job], pk: int) -> Job | None:
    """Mark a queued row running and return it; None when there is nothing to run: cancelled before it started, or a
    message delivered again (its row is running, and the reaper tells a live worker from a dead one by heartbeat)."""
    now = timezone.now()
    with transaction.atomic():
        job = model.objects.select_for_update().filter(pk=pk).first()
        if job is None or job.status != Job.Status.QUEUED:
            return None
        job.status, job.started_at, job.heartbeat_at = Job.Status.RUNNING, now, now
        job.worker, job.gpu = worker_name(os.getpid()), pinned_gpu()
        job.save(update_fields=["status", "started_at", "heartbeat_at", "worker", "gpu"])
    return job


def worker_name(pid: int) -> str:
    """What ``Job.worker`` records for process ``pid`` of this machine: host:pid."""
    return f"{socket.gethostname()}:{pid}"[:200]


def pinned_gpu() -> str:
    """The GPU this worker was pinned to (`manage.py serve` sets CUDA_VISIBLE_DEVICES per gpu worker); "" when not."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")[:50]


def _end(job: Job, status: str, **fields) -> None:
    type(job).objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), **fields)


def job_update(job: Job, **fields) -> None:
    """Save progress fields of a running job (on the object and the row), which also counts as a heartbeat."""
    for name, value in fields.items():
        setattr(job, name, value)
    type(job).objects.filter(pk=job.pk).update(heartbeat_at=timezone.now(), **fields)


def stop_if_cancelled(job: Job, **fields) -> None:
    """Raise JobCancelled (saving ``fields``) when an admin asked the job to stop."""
    if cancel_was_requested(job):
        raise JobCancelled(**fields)


def cancel_was_requested(job: Job) -> bool:
    return type(job).objects.filter(pk=job.pk, cancel_requested=True).exists()


class Heartbeat:
    """Touches a running row every JOB_HEARTBEAT_SECONDS from a thread, while the block runs."""

    def __init__(self, model: type[Job], pk: int):
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
            while not self.stopped.wait(settings.JOB_HEARTBEAT_SECONDS):
                self.rows.update(heartbeat_at=timezone.now())
        finally:
            connection.close()


# --- sending a job to the workers ----------------------------------------------------------------------------------


def job_dispatch_on_commit(job: Job) -> None:
    """Send the job to its queue once the transaction that created it commits (a worker must find the row)."""
    transaction.on_commit(lambda: job_dispatch(job))


def job_dispatch(job: Job) -> bool:
    """Hand the job's message to the broker and record when; False (logged) when the broker could not be reached,
    which leaves the row for ``redispatch_undelivered_jobs``. Never raises: the row is committed, so a launch that
    failed here would answer 500 for a job that does exist."""
    from config.celery import app

    try:
        app.send_task(job.task_name, args=[job.pk], queue=job.queue)
    except Exception as exc:  # noqa: BLE001 - kombu raises OperationalError, but any failure to publish means the same
        logger.warning("Could not send %s to the broker (%s: %s); it will be sent again when the broker answers.",
                       job, type(exc).__name__, exc)
        job.dispatch_error = f"{type(exc).__name__}: {exc}"[:500]
        type(job).objects.filter(pk=job.pk, dispatched_at__isnull=True).update(dispatch_error=job.dispatch_error)
        return False
    job.dispatched_at, job.dispatch_error = job.dispatched_at or timezone.now(), ""
    type(job).objects.filter(pk=job.pk, dispatched_at__isnull=True).update(dispatched_at=job.dispatched_at, dispatch_error="")
    return True


def waits_for_broker(job: Job) -> bool:
    """A queued job whose message the broker has not taken yet: it was unreachable when the job was launched."""
    return job.status == Job.Status.QUEUED and job.dispatched_at is None and bool(job.dispatch_error)


def redispatch_undelivered_jobs() -> int:
    """Send again the queued jobs of every kind whose message never reached the broker (it was unreachable, or the
    web process died between the commit and the send); returns how many went. Rows younger than one reaper period
    are left to the launch that is still sending them."""
    before = timezone.now() - timedelta(seconds=settings.JOB_REAPER_SECONDS)
    sent = 0
    for model in job_kinds():
        rows = model.objects.filter(status=Job.Status.QUEUED, dispatched_at__isnull=True, created_at__lt=before)
        for job in rows.order_by("created_at", "pk"):
            if not job_dispatch(job):
                return sent  # the broker is still away: the next period tries again
            logger.info("Sent %s to the broker again (the broker was unreachable when it was launched).", job)
            sent += 1
    return sent


# --- cancel and dead workers ---------------------------------------------------------------------------------------


def job_cancel(*, job: Job) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop at its next check (it keeps what it did)."""
    model = type(job)
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job.pk)
        if job.status == Job.Status.QUEUED:
            job.status, job.finished_at = Job.Status.CANCELLED, timezone.now()
        elif job.status == Job.Status.RUNNING:
            job.cancel_requested = True
        else:
            raise ValidationError(f"The {job.kind_label} is already {job.get_status_display().lower()}.")
        job.save(update_fields=["status", "cancel_requested", "finished_at"])
    return job


def reap_dead_jobs() -> int:
    """Mark running jobs of every kind whose worker stopped beating as failed; returns how many."""
    stale_before = timezone.now() - dead_after()
    reaped = 0
    for model in job_kinds():
        stale = model.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=stale_before)
        pks = _fail_dead(model, stale)
        if pks:
            logger.warning("Marked %d %s(s) failed: no heartbeat for %s.", len(pks), model.kind_label, dead_after())
        reaped += len(pks)
    return reaped


def _fail_dead(model: type[Job], rows: models.QuerySet) -> list[int]:
    """Mark these running rows failed with the kind's message, then let the kind undo their partial work. Row by row,
    so that a job finishing meanwhile is neither failed nor undone."""
    failed = [
        pk for pk in rows.values_list("pk", flat=True)
        if model.objects.filter(pk=pk, status=Job.Status.RUNNING).update(
            status=Job.Status.FAILED, error=model.dead_worker_message, finished_at=timezone.now()
        )
    ]
    if failed:
        model.discard_partial_work(failed)
    return failed


def fail_jobs_of_dead_processes(pids: Iterable[int]) -> int:
    """Mark failed, now, the running jobs of every kind whose process (a pid of this machine) is known to be dead,
    instead of waiting for their heartbeat to go stale; returns how many. Only for pids seen to die: a pid that is
    alive, or reused, would fail a job that still runs."""
    workers = [worker_name(pid) for pid in pids]
    failed = 0
    for model in job_kinds():
        rows = model.objects.filter(status=Job.Status.RUNNING, worker__in=workers)
        for pk, worker in rows.values_list("pk", "worker"):
            logger.warning("Marking %s %s failed: its worker %s died.", model.kind_label, pk, worker)
        failed += len(_fail_dead(model, rows))
    return failed


# --- the command line ----------------------------------------------------------------------------------------------


def follow_until_finished(job: Job, describe: Callable[[Job], str], write, poll_seconds: float = 1.0) -> Job:
    """For the command line: write ``describe(job)`` (or, while queued, its place in the queue) whenever it
    changes, until the job row is finished."""
    from config.job_queue import queue_place

    last = None
    while True:
        job.refresh_from_db()
        place = queue_place(job) if job.status == Job.Status.QUEUED else None
        line = f"Queued: {place.sentence}" if place else describe(job)
        if line != last:
            write(line)
            last = line
        if job.status in FINISHED:
            return job
        time.sleep(poll_seconds)
